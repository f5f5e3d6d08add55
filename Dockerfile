# The explaind image: explaind built with OpenBLAS (cgo, -tags openblas)
# against Debian's libopenblas-dev, on a slim Debian with the OpenBLAS
# runtime, plus the shard and merge scripts of deploy/slurm, which the
# Kubernetes Jobs of deploy/k8s run.
#
#   docker build -t explaind .
#   docker run --rm -v $PWD/runs:/data explaind train modulo --out /data/modulo
#
# Results are bit-exact for one build, GEMM backend and thread count: train
# and explain a run with the same image (a job replays the run against its
# recorded hashes first and refuses one that does not reproduce). The cgo
# flags of package gemm name Debian's x86-64 include directory: build for
# linux/amd64.

FROM golang:1.26-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -tags openblas -o /out/explaind ./cmd/explaind \
 && /out/explaind version

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libopenblas0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/explaind /usr/local/bin/explaind
COPY deploy/slurm/shard.sbatch deploy/slurm/merge.sbatch /usr/local/lib/explaind/
# An unprivileged user; the Jobs of deploy/k8s give the shared volume its group.
RUN useradd --uid 1000 --user-group --no-create-home --home-dir /data explaind
USER 1000:1000
WORKDIR /data
ENV EXPLAIND=/usr/local/bin/explaind OPENBLAS_NUM_THREADS=1
ENTRYPOINT ["explaind"]
