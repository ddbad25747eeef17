#!/usr/bin/env bash
# make demo: start a local origin, push a generated multi-layer image with
# crane (as CI would), pull it back and check every byte, then print what
# happened. Everything lives in a temp dir that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"

command -v crane >/dev/null || { echo "crane missing: run 'make tools'" >&2; exit 1; }

work=$(mktemp -d /tmp/shoal-demo.XXXXXX)
pid=""
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

# A free loopback port: bind :0 in the origin would hide the port from us.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg="127.0.0.1:$port"
./bin/shoal-origin --addr "$reg" --data-dir "$work/origin" --log-level warn &
pid=$!
for _ in $(seq 100); do curl -fs "http://$reg/healthz" >/dev/null && break; sleep 0.05; done
curl -fs "http://$reg/v2/" >/dev/null || { echo "origin did not come up" >&2; exit 1; }
echo "origin up on http://$reg (data in $work/origin)"

# Three layers of random data: 4, 16 and 44 MiB.
layers=()
for i in 1 2 3; do
	mib=$(( i == 1 ? 4 : i == 2 ? 16 : 44 ))
	mkdir -p "$work/l$i"
	head -c $((mib << 20)) /dev/urandom > "$work/l$i/data-$i.bin"
	tar -C "$work/l$i" -cf "$work/layer$i.tar" .
	layers+=(-f "$work/layer$i.tar")
done
img="$reg/demo/app:v1"
t0=$(date +%s.%N)
crane append --new_tag "$img" "${layers[@]}" >/dev/null 2>"$work/crane.log"
crane mutate --set-platform linux/amd64 "$img" -t "$img" >/dev/null 2>>"$work/crane.log"
t1=$(date +%s.%N)
digest=$(crane digest "$img")
echo "pushed $img ($digest) in $(printf '%.2f' "$(echo "$t1 - $t0" | bc)") s"

crane pull --format oci "$img" "$work/pulled" 2>>"$work/crane.log"
t2=$(date +%s.%N)
echo "pulled it back in $(printf '%.2f' "$(echo "$t2 - $t1" | bc)") s; verifying every blob:"
fail=0
for f in "$work"/pulled/blobs/sha256/*; do
	want=$(basename "$f")
	got=$(sha256sum "$f" | cut -d' ' -f1)
	size=$(stat -c %s "$f")
	if [ "$want" = "$got" ]; then s=ok; else s=MISMATCH; fail=1; fi
	printf '  sha256:%s…  %10d bytes  %s\n' "${want:0:16}" "$size" "$s"
done

echo "registry view:"
echo "  catalog:   $(curl -fs "http://$reg/v2/_catalog")"
echo "  tags:      $(curl -fs "http://$reg/v2/demo/app/tags/list")"
echo "  layers:    $(crane manifest "$img" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(len(m["layers"]), "layers,", sum(l["size"] for l in m["layers"]), "bytes")')"
metrics=$(curl -fs "http://$reg/metrics")
echo "  origin in:  $(echo "$metrics" | awk '/^shoal_origin_bytes_received_total/ {printf "%d", $2}') bytes"
echo "  origin out: $(echo "$metrics" | awk '/^shoal_origin_bytes_sent_total/ {printf "%d", $2}') bytes"
echo "  uploads:    $(echo "$metrics" | awk '/^shoal_origin_upload_duration_seconds_count/ {print $2}') committed"
[ $fail = 0 ] && echo "demo OK: pulled content is byte-identical" || { echo "demo FAILED"; exit 1; }
