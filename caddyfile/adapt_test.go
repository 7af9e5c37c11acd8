package caddyfile_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/acsproxy/caddy-acs-hmac/caddyfile"
	_ "github.com/acsproxy/caddy-acs-hmac/module"
)

// TestCaddyfileAdaptToJSON runs the golden files in testdata: each holds a
// Caddyfile, a line of "----------", and either the JSON it must adapt to or,
// when that part does not start with '{', a substring of the adapt error.
// It follows caddytest/integration/caddyfile_adapt_test.go in Caddy itself.
func TestCaddyfileAdaptToJSON(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.caddyfiletest files")
	}

	// The golden files use these variables; set them so that a key expanded
	// at adapt time (instead of at provisioning) would show up in the JSON
	// and fail the comparison. The sentinels must never appear.
	sentinels := map[string]string{
		"ACS_KEY":               "U0VOVElORUwtQUNTX0tFWQ==",
		"ACS_ACCESS_KEY":        "U0VOVElORUwtQUNTX0FDQ0VTU19LRVk=",
		"ACS_ALPHA_KEY":         "U0VOVElORUwtQUNTX0FMUEhBX0tFWQ==",
		"CREDENTIALS_DIRECTORY": "/sentinel/credentials",
	}
	for k, v := range sentinels {
		t.Setenv(k, v)
	}

	winNewlines := regexp.MustCompile(`\r?\n`)

	for _, path := range files {
		filename := filepath.Base(path)
		t.Run(filename, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("reading %s: %v", path, err)
			}

			// split the Caddyfile (first) and JSON (second) parts
			// (append newline to Caddyfile to match formatter expectations)
			parts := strings.Split(string(data), "----------")
			if len(parts) != 2 {
				t.Fatalf("%s: want exactly one line of ---------- separating the Caddyfile from the expected output, found %d parts", filename, len(parts))
			}
			caddyfile, expected := strings.TrimSpace(parts[0])+"\n", strings.TrimSpace(parts[1])
			expected = winNewlines.ReplaceAllString(expected, "\n")

			if len(expected) > 0 && expected[0] == '{' {
				for k, v := range sentinels {
					if strings.Contains(expected, v) {
						t.Fatalf("%s: the expected JSON holds the value of $%s; it must hold the placeholder", filename, k)
					}
				}
				if !caddytest.CompareAdapt(t, filename, caddyfile, "caddyfile", expected) {
					t.Errorf("failed to adapt %s (diff on stdout: - expected, + actual)", filename)
				}
				return
			}

			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			if err == nil {
				t.Fatalf("expected an error for %s but got none", filename)
			}
			if got := winNewlines.ReplaceAllString(err.Error(), "\n"); !strings.Contains(got, expected) {
				t.Errorf("expected the error for %s to contain:\n%s\nbut got:\n%s", filename, expected, got)
			}
		})
	}
}
