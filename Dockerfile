# hookd container image.
#
# Two ways to the same runtime image, selected with --target:
#
#   release   (the default, last stage) compiles hookd in golang:1.26 for the
#             target platform; what CI's buildx uses for linux/amd64,
#             linux/arm64 and linux/arm/v7:
#               docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 .
#
#   prebuilt  takes a binary built on the host (scripts/build-image.sh puts it,
#             with the host's CA bundle, under dist/image/). It needs no base
#             image at all, so it builds where nothing can be pulled, also with
#             the legacy builder (Docker 20.10 without buildx):
#               scripts/build-image.sh [TAG]
#
# Stage order matters: the legacy builder runs every stage up to the target
# in file order, whether the target uses it or not. "prebuilt" therefore
# comes before the golang stage, so that building it never pulls golang.
#
# The image runs as 65532:65532 without a shell. To reach the Docker socket
# the container must join the socket's group: compose `group_add` (or
# `docker run --group-add`) with the host's `stat -c %g /var/run/docker.sock`.

ARG GO_VERSION=1.26

# ---- metadata shared by both runtime stages ---------------------------------
FROM scratch AS runtime-base
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=""
LABEL org.opencontainers.image.title="hookd" \
      org.opencontainers.image.description="Push-to-deploy for Docker hosts: GitHub Container Registry webhooks recreate the labelled containers, health-gated with rollback." \
      org.opencontainers.image.source="https://github.com/and3rn3t/hookd" \
      org.opencontainers.image.url="https://github.com/and3rn3t/hookd" \
      org.opencontainers.image.documentation="https://github.com/and3rn3t/hookd#readme" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
ENV HOOKD_STATE_DIR=/var/lib/hookd
USER 65532:65532
EXPOSE 8080
# Exec form: the image has no shell. The verb reads HOOKD_LISTEN for the port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/hookd", "healthcheck"]
ENTRYPOINT ["/hookd"]

# ---- runtime image from a binary built on the host --------------------------
FROM runtime-base AS prebuilt
COPY dist/image/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# The state directory is owned by the runtime user, so that a fresh named
# volume mounted there (which Docker seeds from the image) is writable.
COPY --chown=65532:65532 dist/image/state/ /var/lib/hookd/
COPY dist/image/hookd /hookd
VOLUME ["/var/lib/hookd"]

# ---- compile in the golang image (cross-compiling on the build platform) ----
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG TARGETVARIANT
ARG VERSION=dev
ARG REVISION=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY cmd/ cmd/
COPY internal/ internal/
# TARGETVARIANT is v7 for linux/arm/v7; Go wants GOARM=7.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS="$TARGETOS" GOARCH="$TARGETARCH" GOARM="${TARGETVARIANT#v}" \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.revision=${REVISION}" \
      -o /out/hookd ./cmd/hookd \
 && mkdir -p /out/state \
 && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

# ---- runtime image from the compiled binary (default target) ----------------
FROM runtime-base AS release
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/hookd/
COPY --from=build /out/hookd /hookd
VOLUME ["/var/lib/hookd"]
