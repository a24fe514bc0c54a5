# wecom-bridge container image (README: 容器部署 / Container).
#
#   docker build -t wecom-bridge .
#   docker run --rm wecom-bridge version
#
# Two stages: a Go builder makes a static binary (CGO_ENABLED=0) and lays out
# the image's whole file tree in /rootfs; the image itself is FROM scratch
# with only that tree: the binary, the CA bundle (HTTPS to WeCom and the LLM
# APIs), the time zone database, a passwd entry for the non-root user and the
# state directory. No shell, so the HEALTHCHECK is the binary's own
# `healthcheck` subcommand.
#
# GO_IMAGE is the builder: any Debian-like image with Go 1.26, git, CA
# certificates and tzdata (the README's offline build imports one made with
# debootstrap when no registry is reachable).
ARG GO_IMAGE=golang:1.26-bookworm

FROM ${GO_IMAGE} AS rootfs-build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# -buildvcs: `wecom-bridge version` shows the commit when .git is in the
# build context (it is not excluded by .dockerignore).
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=auto -o /rootfs/wecom-bridge . \
 && /rootfs/wecom-bridge version \
 && mkdir -p /rootfs/etc/ssl/certs /rootfs/usr/share /rootfs/var/lib/wecom-bridge /rootfs/etc/wecom-bridge /rootfs/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && cp -r /usr/share/zoneinfo /rootfs/usr/share/ \
 && echo 'wecom-bridge:x:10001:10001:wecom-bridge:/var/lib/wecom-bridge:/nonexistent' > /rootfs/etc/passwd \
 && echo 'wecom-bridge:x:10001:' > /rootfs/etc/group \
 && chown 10001:10001 /rootfs/var/lib/wecom-bridge && chmod 0700 /rootfs/var/lib/wecom-bridge \
 && chmod 1777 /rootfs/tmp

FROM scratch
COPY --from=rootfs-build /rootfs/ /
# Non-root. The state directory is owned by this user; a bind mount must
# be too (chown 10001:10001), a named volume inherits it.
USER 10001:10001
# The bbolt database and its admin socket (bridge.db.sock, used by
# `wecom-bridge backup`). Keep it on a volume: it holds every pending answer.
VOLUME ["/var/lib/wecom-bridge"]
# The config is mounted here; secrets come from the environment (env:NAME).
# server.listen must be "0.0.0.0:8080" inside a container.
EXPOSE 8080
ENV TZ=Asia/Shanghai
# The same soft GC memory limit as the systemd unit: next to Dify the LLM
# streams come over plain HTTP/1.1, a connection and two goroutines each,
# and with 1,000 at once the load run peaked at ~115 MB without it and
# ~94 MB with it. Not a hard cap: `-e GOMEMLIMIT=...` raises it.
ENV GOMEMLIMIT=80MiB
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s --retries=3 \
  CMD ["/wecom-bridge", "healthcheck", "-config", "/etc/wecom-bridge/config.toml"]
# SIGTERM drains answers in flight within server.shutdown_grace (20s by
# default): give `docker stop` longer than that (compose: stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/wecom-bridge"]
CMD ["-config", "/etc/wecom-bridge/config.toml"]
