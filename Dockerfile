# pgfunnel container image: built in a Rust image, run in distroless (glibc, no shell)
# as the non-root user 65532.  docker build -t pgfunnel .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pgfunnel \
    && install -D -m 0755 target/release/pgfunnel /out/pgfunnel

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pgfunnel /usr/local/bin/pgfunnel
USER 65532:65532
# 6432: PostgreSQL clients; 9127: /metrics, /health/live, /health/ready, /fleet/peer
EXPOSE 6432 9127
# SIGTERM drains (WAIT_FOR_CLIENTS), as Kubernetes and `docker stop` send it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pgfunnel"]
CMD ["/etc/pgfunnel/config/pgfunnel.ini"]
