package module

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

func init() {
	caddy.RegisterModule(ConnectionStringSource{})
	caddy.RegisterModule(AccessKeySource{})
	caddy.RegisterModule(new(KeyFileSource))
}

// KeySource yields the ACS credential to sign or verify with. Modules in the
// acs_hmac.key_sources namespace implement it. Credential is called on every
// request, so it must be cheap and safe for concurrent use; sources that
// refresh swap the credential atomically, so a request keeps the key it
// started with.
type KeySource interface {
	// Credential returns the credential in force now, or an error wrapping
	// ErrNoKey when none is available. The error never contains key material.
	Credential() (signer.Credential, error)
}

// Refresher is implemented by key sources that can look for a new key on
// demand. The transport calls Refresh when the upstream answers 401 to a
// request signed with used: if the source then has a different key, the
// request is re-signed and replayed once. Implementations coalesce concurrent
// calls and rate-limit the work behind them.
type Refresher interface {
	Refresh(ctx context.Context, used *signer.Key) (cred signer.Credential, changed bool)
}

// ErrNoKey is wrapped by KeySource errors: no usable key is available.
var ErrNoKey = errors.New("no ACS access key available")

// keySourceNamespace is the Caddy module namespace of key sources.
const keySourceNamespace = "acs_hmac.key_sources"

// expand resolves global placeholders ({env.X}, {file./path}, ...) at
// provisioning, so the JSON config and the admin API keep the placeholder and
// never the value. An unknown or empty placeholder is an error that names the
// placeholder, never a value.
func expand(field, s string) (string, error) {
	out, err := caddy.NewReplacer().ReplaceOrErr(s, true, true)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return out, nil
}

// ConnectionStringSource is a static key source: an ACS connection string
// ("endpoint=https://...;accesskey=..."). Because it names the endpoint, the
// transport sends and signs that endpoint's Host and refuses any other upstream.
type ConnectionStringSource struct {
	// The connection string, or a placeholder for it such as
	// "{env.ACS_CONNECTION_STRING}" or "{file./run/secrets/acs}".
	ConnectionString string `json:"connection_string,omitempty"`

	cred signer.Credential
}

// CaddyModule returns the Caddy module information.
func (ConnectionStringSource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  keySourceNamespace + ".connection_string",
		New: func() caddy.Module { return new(ConnectionStringSource) },
	}
}

// Provision parses the connection string.
func (s *ConnectionStringSource) Provision(caddy.Context) error {
	if s.ConnectionString == "" {
		return errors.New("connection_string: empty")
	}
	v, err := expand("connection_string", s.ConnectionString)
	if err != nil {
		return err
	}
	s.cred, err = signer.ParseConnectionString(v)
	if err != nil {
		return fmt.Errorf("connection_string: %w", err)
	}
	return nil
}

// Credential implements KeySource.
func (s *ConnectionStringSource) Credential() (signer.Credential, error) { return s.cred, nil }

// AccessKeySource is a static key source: a bare base64 access key. With no
// endpoint, the transport signs the Host header exactly as it will be sent.
type AccessKeySource struct {
	// The base64 access key, or a placeholder for it such as "{env.ACS_ACCESS_KEY}".
	AccessKey string `json:"access_key,omitempty"`

	cred signer.Credential
}

// CaddyModule returns the Caddy module information.
func (AccessKeySource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  keySourceNamespace + ".access_key",
		New: func() caddy.Module { return new(AccessKeySource) },
	}
}

// Provision decodes the key.
func (s *AccessKeySource) Provision(caddy.Context) error {
	if s.AccessKey == "" {
		return errors.New("access_key: empty")
	}
	v, err := expand("access_key", s.AccessKey)
	if err != nil {
		return err
	}
	k, err := signer.ParseKey(v)
	if err != nil {
		return fmt.Errorf("access_key: %w", err)
	}
	s.cred = signer.Credential{Key: k}
	return nil
}

// Credential implements KeySource.
func (s *AccessKeySource) Credential() (signer.Credential, error) { return s.cred, nil }

// KeyFileSource reads a file that holds a connection string or a bare base64
// key, such as a Kubernetes secret mount or the Key Vault CSI driver's file.
// The file is checked every poll_interval and re-read when it changes; a
// change that does not parse is logged and the last good key keeps serving.
type KeyFileSource struct {
	// Path of the file. Placeholders expand.
	Path string `json:"path,omitempty"`
	// How often the file is checked for changes. Default: 1s.
	PollInterval caddy.Duration `json:"poll_interval,omitempty"`

	path   string
	cur    atomic.Pointer[signer.Credential]
	mu     sync.Mutex // serialises check: the watcher and 401-triggered re-reads
	stamp  fileStamp
	logger *zap.Logger
}

// maxKeyFileSize bounds what is read: a key file is a few hundred bytes, and a
// wrong path to a large file must not cost memory.
const maxKeyFileSize = 64 << 10

// DefaultKeyFilePoll is how often a key file is checked when poll_interval is unset.
const DefaultKeyFilePoll = time.Second

// CaddyModule returns the Caddy module information.
func (*KeyFileSource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  keySourceNamespace + ".key_file",
		New: func() caddy.Module { return new(KeyFileSource) },
	}
}

// fileStamp identifies a version of a file cheaply: a rotated secret mount
// changes at least one of these.
type fileStamp struct {
	size    int64
	modTime time.Time
	digest  [sha256.Size]byte
}

// Provision reads the file once (a failure is a configuration error) and
// starts watching it for the life of the config.
func (s *KeyFileSource) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	if s.Path == "" {
		return errors.New("key_file: no path")
	}
	p, err := expand("key_file", s.Path)
	if err != nil {
		return err
	}
	s.path = p
	if s.PollInterval < 0 {
		return errors.New("key_file: poll_interval must not be negative")
	}
	if s.PollInterval == 0 {
		s.PollInterval = caddy.Duration(DefaultKeyFilePoll)
	}
	cred, stamp, err := s.read()
	if err != nil {
		return err
	}
	s.cur.Store(&cred)
	s.stamp = stamp
	go s.watch(ctx)
	return nil
}

// read reads and parses the file; errors name the path, never the content.
func (s *KeyFileSource) read() (signer.Credential, fileStamp, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return signer.Credential{}, fileStamp{}, fmt.Errorf("key_file %s: %w", s.path, pathErr(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return signer.Credential{}, fileStamp{}, fmt.Errorf("key_file %s: %w", s.path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return signer.Credential{}, fileStamp{}, fmt.Errorf("key_file %s: reading: %w", s.path, pathErr(err))
	}
	defer clear(data)
	if len(data) > maxKeyFileSize {
		return signer.Credential{}, fileStamp{}, fmt.Errorf("key_file %s: larger than %d bytes; it should hold one connection string or key", s.path, maxKeyFileSize)
	}
	stamp := fileStamp{size: fi.Size(), modTime: fi.ModTime(), digest: sha256.Sum256(data)}
	cred, err := signer.ParseCredential(string(bytes.TrimSpace(data)))
	if err != nil {
		return signer.Credential{}, stamp, fmt.Errorf("key_file %s: %w", s.path, err)
	}
	return cred, stamp, nil
}

// watch polls the file until the config is unloaded.
func (s *KeyFileSource) watch(ctx context.Context) {
	t := time.NewTicker(time.Duration(s.PollInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.check()
		}
	}
}

// check re-reads the file if its size or modification time changed, and
// swaps in the new key if it parses. Kubernetes secret mounts replace a
// symlink, which os.Stat follows, so the stamp changes on rotation.
func (s *KeyFileSource) check() {
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path)
	if err != nil {
		if s.stamp.size != -1 {
			s.logger.Warn("key file unreadable; keeping the last good key", zap.String("path", s.path), zap.Error(pathErr(err)))
			s.stamp.size = -1 // log once until it changes again
		}
		return
	}
	if fi.Size() == s.stamp.size && fi.ModTime().Equal(s.stamp.modTime) {
		return
	}
	cred, stamp, err := s.read()
	if err != nil {
		s.logger.Warn("key file changed but holds no usable key; keeping the last good key", zap.String("path", s.path), zap.Error(err))
		s.stamp.size, s.stamp.modTime = fi.Size(), fi.ModTime()
		return
	}
	changed := stamp.digest != s.stamp.digest
	s.stamp = stamp
	if !changed {
		return
	}
	old := s.cur.Swap(&cred)
	s.logger.Info("key file changed; new key in use", zap.String("path", s.path), zap.String("key_id", cred.Key.ID()), zap.String("previous_key_id", old.Key.ID()))
}

// Refresh implements Refresher: re-check the file now, as Kubernetes may
// deliver a rotated key up to a minute after ACS starts refusing the old one.
func (s *KeyFileSource) Refresh(_ context.Context, used *signer.Key) (signer.Credential, bool) {
	if c := s.cur.Load(); c.Key != used {
		return *c, true
	}
	s.check()
	c := s.cur.Load()
	return *c, c.Key != used
}

// Credential implements KeySource.
func (s *KeyFileSource) Credential() (signer.Credential, error) {
	c := s.cur.Load()
	if c == nil {
		return signer.Credential{}, fmt.Errorf("key_file %s: %w", s.path, ErrNoKey)
	}
	return *c, nil
}

// loadKeySource loads the key source module named in raw for owner.
func loadKeySource(ctx caddy.Context, owner any, raw json.RawMessage) (KeySource, error) {
	if raw == nil {
		return nil, errors.New("no key source: set one of connection_string, access_key, key_file or key_vault")
	}
	mod, err := ctx.LoadModule(owner, "KeySourceRaw")
	if err != nil {
		return nil, fmt.Errorf("loading key source: %w", err)
	}
	ks, ok := mod.(KeySource)
	if !ok {
		return nil, fmt.Errorf("module %T is not a key source", mod)
	}
	return ks, nil
}

// Interface guards
var (
	_ KeySource         = (*ConnectionStringSource)(nil)
	_ KeySource         = (*AccessKeySource)(nil)
	_ KeySource         = (*KeyFileSource)(nil)
	_ Refresher         = (*KeyFileSource)(nil)
	_ caddy.Provisioner = (*ConnectionStringSource)(nil)
	_ caddy.Provisioner = (*AccessKeySource)(nil)
	_ caddy.Provisioner = (*KeyFileSource)(nil)
)

// pathErr drops the path from an *os.PathError, since messages name the path already.
func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
