package module

import (
	"errors"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Collectors are created once and registered with each config's registry
// (ctx.GetMetricsRegistry is new on every reload). Labels name outcomes and
// secrets (vault host and secret name), never keys, signatures or bodies.
var (
	metricRequestsSigned = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "acs_hmac", Name: "requests_signed_total",
		Help: "Requests signed and sent upstream (each attempt counts).",
	})
	metricSigningFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "acs_hmac", Name: "signing_failures_total",
		Help: "Requests refused instead of being sent, by reason.",
	}, []string{"reason"})
	metricKeyFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "acs_hmac", Name: "key_fetches_total",
		Help: "Key Vault secret fetches, by secret and outcome.",
	}, []string{"secret", "outcome"})
	metricReplays = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "acs_hmac", Name: "unauthorized_replays_total",
		Help: "Upstream 401s: replayed with a rotated key, or passed back because the key had not changed.",
	}, []string{"outcome"})
	keyAge = &keyAgeCollector{desc: prometheus.NewDesc("caddy_acs_hmac_key_age_seconds",
		"Seconds since the key in use by a Key Vault source was first fetched.", []string{"secret"}, nil)}
)

// sources holds the live vault fetchers, for the key age gauge.
var sources sync.Map // *vaultFetcher -> struct{}

// keyAgeCollector reports each live fetcher's key age at scrape time.
type keyAgeCollector struct{ desc *prometheus.Desc }

func (c *keyAgeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *keyAgeCollector) Collect(ch chan<- prometheus.Metric) {
	// Several fetchers can share a label (the same secret with another
	// credential or refresh interval, or two configs during a reload); a
	// registry refuses duplicate series, so report the youngest key per label.
	ages := map[string]float64{}
	sources.Range(func(k, _ any) bool {
		f := k.(*vaultFetcher)
		if cur := f.cur.Load(); cur != nil {
			age := time.Since(cur.since).Seconds()
			if prev, ok := ages[f.label()]; !ok || age < prev {
				ages[f.label()] = age
			}
		}
		return true
	})
	for label, age := range ages {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, age, label)
	}
}

// registerMetrics registers the collectors with this config's registry.
func registerMetrics(ctx caddy.Context) {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{metricRequestsSigned, metricSigningFailures, metricKeyFetches, metricReplays, keyAge} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				ctx.Logger().Warn("registering metrics", zap.Error(err))
			}
		}
	}
}
