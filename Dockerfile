# Builds the switchboard binary and ships it on a slim Debian base.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
RUN cargo build --release --locked --bin switchboard

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home switchboard
COPY --from=build /src/target/release/switchboard /usr/local/bin/switchboard
USER switchboard
EXPOSE 8080
# SIGTERM drains sessions (close 1001; acks-mode sessions resume on other
# nodes or are passed on to them) within 8 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchboard"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
