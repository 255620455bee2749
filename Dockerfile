# kubepam operator image. Its build step is the command `.ci/run` runs on
# every change (stage "release build (image)"), so CI proves it builds.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY tests ./tests
# kubepam keeps its admission policies as this file says (include_str!).
COPY manifests/admission-policy.yaml ./manifests/admission-policy.yaml
RUN cargo build --release --locked --bin kubepam

# Minimal runtime: glibc and CA certificates, no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kubepam /kubepam
USER 65532:65532
ENTRYPOINT ["/kubepam"]
CMD ["run"]
