#!/usr/bin/env bash
# Build Keel's image with podman and check it: it starts read-only as uid 10001, answers /healthz and
# /readyz, serves a chat call on the embedded default, refuses writes outside /data and /tmp, and stops
# cleanly on SIGTERM. Where no container registry is reachable (this project's CI machine), the base
# image is a Debian bookworm rootfs made with debootstrap from Debian's own packages.
#   deploy/verify-image.sh            # needs root, podman, debootstrap (apt-get install podman debootstrap runc)
set -euo pipefail
cd "$(dirname "$0")/.."
base="${KEEL_BASE_IMAGE:-}"
if [ -z "$base" ]; then
    base=localhost/keel-base:bookworm
    if ! podman image exists "$base"; then
        rootfs="$(mktemp -d)"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
            http://deb.debian.org/debian >/dev/null
        tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
        rm -rf "$rootfs"
    fi
fi
# chroot isolation and runc: the OCI runtime podman picks by default (crun) refuses this machine's hybrid cgroups
podman build --format docker --isolation chroot --network host -v /etc/ssl/certs:/etc/ssl/certs:ro \
    --build-arg PYTHON_IMAGE="$base" -f deploy/Dockerfile -t localhost/keel:verify . >/dev/null
port="${KEEL_VERIFY_PORT:-18931}"
name="keel-verify-$$"
trap 'podman --runtime runc rm -f "$name" >/dev/null 2>&1 || true' EXIT
podman --runtime runc run -d --name "$name" --ulimit nofile=10000:10000 --ulimit nproc=1000:1000 \
    --network host --read-only --tmpfs /tmp -e KEEL_PORT="$port" localhost/keel:verify >/dev/null
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
echo "healthz: $(curl -sf "http://127.0.0.1:$port/healthz")"
echo "readyz:  $(curl -sf "http://127.0.0.1:$port/readyz" | head -c 60)…"
echo "user:    $(podman exec "$name" id -u)"
key="$(podman logs "$name" 2>&1 | grep -o 'sk-keel-[A-Za-z0-9_-]*' | head -1)"
curl -sf "http://127.0.0.1:$port/v1/chat/completions" -H "Authorization: Bearer $key" \
    -H 'content-type: application/json' -d '{"model":"demo","messages":[{"role":"user","content":"hi"}]}' \
    | grep -q '"Simulated answer to: hi"' && echo "chat:    ok"
if podman exec "$name" sh -c 'touch /usr/x' 2>/dev/null; then echo "root filesystem is writable" >&2; exit 1; fi
echo "rootfs:  read-only"
podman exec "$name" python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=2)" \
    && echo "healthcheck command: ok"
podman stop -t 10 "$name" >/dev/null
podman logs "$name" 2>&1 | grep -q 'Application shutdown complete' && echo "SIGTERM: clean shutdown"
echo "image:   $(podman image inspect localhost/keel:verify --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
