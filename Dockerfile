# syntax=docker/dockerfile:1
# Caddy with caddy-acs-hmac: a static binary on a minimal, non-root image
# that has CA certificates (for HTTPS to ACS and Key Vault) and nothing else.
#
#   docker build -t caddy-acs-hmac .
#   docker run --rm -p 127.0.0.1:8080:8080 -v "$PWD/Caddyfile:/etc/caddy/Caddyfile:ro" caddy-acs-hmac

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The same command .ci/run runs on every change.
RUN sh scripts/build.sh /out/caddy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/caddy /usr/bin/caddy
COPY Caddyfile.example /etc/caddy/Caddyfile
# Caddy keeps its state under XDG dirs; nonroot's home is writable.
ENV XDG_CONFIG_HOME=/home/nonroot/.config XDG_DATA_HOME=/home/nonroot/.local/share
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/bin/caddy"]
CMD ["run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
