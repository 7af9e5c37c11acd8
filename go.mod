module github.com/acsproxy/caddy-acs-hmac

go 1.26.8
