#!/usr/bin/env bash
# vmv certs init and vmv serve as processes: certificates openssl accepts (keys 0600, never
# printed); configuration errors name file and line (exit 2); a real start on the embedded
# swtpm, mutual TLS with curl (no client certificate → refused), the "no Xen" line; the
# measurement log holds the VMV's boot measurements and the quote answer carries them, with the
# configuration file's own SHA-256; SIGTERM → exit 0 and the swtpm it started is gone; a restart
# (a new swtpm: a TPM reset) ends the epoch and a verifier at the old one gets the whole new one.
set -uo pipefail
cd "$(dirname "$0")/../.."
VMV=$PWD/.build/debug/vmv
T=$(mktemp -d)
pid=
# On a failure: vmv serve gets SIGTERM (it stops the swtpm it started), then SIGKILL, and a
# swtpm left behind is stopped by its pid file.
cleanup() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null
  fi
  [ -f "$T/state/swtpm/swtpm.pid" ] && kill "$(cat "$T/state/swtpm/swtpm.pid")" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$T/serve.log" ] && tail -20 "$T/serve.log"; exit 1; }

# --- certs init
out=$("$VMV" certs init --out "$T/certs" --san localhost --san 127.0.0.1 --san vmv.test) || fail "certs init: $out"
echo "$out" | grep -q "PRIVATE KEY" && fail "certs init printed a key"
for k in ca server client; do
  [ "$(stat -c %a "$T/certs/$k.key")" = 600 ] || fail "$k.key is mode $(stat -c %a "$T/certs/$k.key"), not 600"
done
openssl verify -CAfile "$T/certs/ca.pem" "$T/certs/server.pem" "$T/certs/client.pem" || fail "openssl verify"
openssl verify -purpose sslserver -CAfile "$T/certs/ca.pem" "$T/certs/server.pem" >/dev/null || fail "server purpose"
openssl verify -purpose sslclient -CAfile "$T/certs/ca.pem" "$T/certs/client.pem" >/dev/null || fail "client purpose"
openssl verify -purpose sslclient -CAfile "$T/certs/ca.pem" "$T/certs/server.pem" >/dev/null 2>&1 && fail "the server certificate passes as a client certificate"
san=$(openssl x509 -in "$T/certs/server.pem" -noout -ext subjectAltName)
for n in "DNS:localhost" "DNS:vmv.test" "IP Address:127.0.0.1"; do echo "$san" | grep -q "$n" || fail "server SANs lack $n: $san"; done
err=$("$VMV" certs init --out "$T/certs" 2>&1) && fail "certs init overwrote existing files"
echo "$err" | grep -q -- "--force" || fail "no hint at --force: $err"
echo "ok: certs init"

# --- configuration errors: file, line, reason; exit 2
printf '[listen]\naddress = "127.0.0.1"\nport = 70000\n' > "$T/bad.toml"
err=$("$VMV" serve --config "$T/bad.toml" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "bad port: exit $rc, not 2"
echo "$err" | grep -q "$T/bad.toml:3: \[listen\] port = 70000" || fail "bad port message: $err"
printf '[tpm]\ntcit = "simulator"\n' > "$T/bad2.toml"
err=$("$VMV" serve --config "$T/bad2.toml" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "unknown key: exit $rc"
echo "$err" | grep -q "$T/bad2.toml:2: \[tpm\] unknown key 'tcit'" || fail "unknown key message: $err"
err=$("$VMV" serve --config "$T/missing.toml" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "missing file: exit $rc"
echo "ok: configuration errors"

# Starts vmv serve in the background; sets pid and port (from its "serving" line).
start_serve() {
  "$VMV" serve --config "$T/vmv.toml" 2>"$T/serve.log" &
  pid=$!
  for _ in $(seq 1 600); do
    grep -q "serving the VMV API" "$T/serve.log" && break
    kill -0 "$pid" 2>/dev/null || fail "vmv serve exited early"
    sleep 0.2
  done
  port=$(grep -o 'url=https://127.0.0.1:[0-9]*' "$T/serve.log" | tail -1 | sed 's/.*://')
  [ -n "$port" ] || fail "no listening line"
}

# --- serve on the embedded simulator
cat > "$T/vmv.toml" <<TOML
[state]
directory = "state"
[listen]
port = 0
[tls]
certificate = "certs/server.pem"
key = "certs/server.key"
client_ca = "certs/ca.pem"
[measure]
xen = "auto"
TOML
"$VMV" serve --config "$T/vmv.toml" --check | grep -q "directory = \"$T/state\"" || fail "--check: relative paths"
start_serve
swtpm_pid=$(cat "$T/state/swtpm/swtpm.pid" 2>/dev/null)
[ -n "$swtpm_pid" ] && kill -0 "$swtpm_pid" || fail "no running swtpm for the simulator"
if [ ! -e /dev/xen/privcmd ] && [ ! -e /proc/xen/privcmd ]; then
  [ "$(grep -c 'no Xen on this machine' "$T/serve.log")" = 1 ] || fail "expected one 'no Xen' line"
fi
C=(--silent --show-error --cacert "$T/certs/ca.pem" --cert "$T/certs/client.pem" --key "$T/certs/client.key")
health=$(curl "${C[@]}" "https://localhost:$port/healthz") || fail "healthz"
[ "$health" = '{"status":"ok"}' ] || fail "healthz said $health"
curl --silent --cacert "$T/certs/ca.pem" "https://localhost:$port/healthz" >/dev/null 2>&1 && fail "served without a client certificate"
nonce=$(openssl rand -hex 32)
quote=$(curl "${C[@]}" -H 'content-type: application/json' -d "{\"nonce\":\"$nonce\"}" "https://localhost:$port/v1/quote") || fail "quote"
echo "$quote" | grep -q '"scheme":"vmv-merkle-sha256-v1"' || fail "quote answer: $quote"
short=$(curl "${C[@]}" -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '{"nonce":"00"}' "https://localhost:$port/v1/quote")
[ "$short" = 400 ] || fail "short nonce answered $short"
curl "${C[@]}" "https://localhost:$port/metrics" | grep -q '^vmv_quote_requests_total 1$' || fail "metrics"
# The log: the boot measurements, read by vmv log while vmv serve appends; the answer carries them.
shown=$("$VMV" log show --state "$T/state" --json) || fail "vmv log show: $shown"
for kind in epochStart vmvBinary vmvConfig platform; do
  echo "$shown" | grep -q "\"kind\" *: *\"$kind\"" || fail "no $kind record in the log: $shown"
done
echo "$shown" | grep -q "$(sha256sum "$T/vmv.toml" | cut -c1-64)" || fail "the configuration file's SHA-256 is not in the log"
records=$(echo "$shown" | grep -c '"seq"')
echo "$quote" | grep -q "\"nextSeq\":$records[,}]" || fail "the quote's log does not end at the $records records of the store: $quote"
epoch=$(echo "$quote" | grep -o '"epoch":[0-9]*' | head -1 | cut -d: -f2)
grep -q "PRIVATE KEY" "$T/serve.log" && fail "a key in the log"
echo "ok: serving on port $port"

# --- vmv-verifier against it: enroll (credential activation against the swtpm's EK CA), learn
# the platform's references, attest (trusted), attest again (incremental replay)
VV=$PWD/.build/debug/vmv-verifier
V=(--ca "$T/certs/ca.pem" --cert "$T/certs/client.pem" --key "$T/certs/client.key")
mkdir -p "$T/anchors" "$T/refs"
cp "$T/state/swtpm/ca/swtpm-localca-rootca-cert.pem" "$T/state/swtpm/ca/issuercert.pem" "$T/anchors/"
out=$("$VV" enroll "https://localhost:$port" "${V[@]}" --ek-anchors "$T/anchors" --out "$T/pin.json" 2>&1) || fail "enroll: $out"
out=$("$VV" refs learn "https://localhost:$port" --refs "$T/refs" --platform --ak "$T/pin.json" "${V[@]}" 2>&1) || fail "refs learn: $out"
out=$("$VV" attest "https://localhost:$port" "${V[@]}" --refs "$T/refs" --ak "$T/pin.json" --state "$T/vstate" 2>&1) || fail "attest: $out"
echo "$out" | grep -q "result: trusted" || fail "attest: $out"
out=$("$VV" attest "https://localhost:$port" "${V[@]}" --refs "$T/refs" --ak "$T/pin.json" --state "$T/vstate" 2>&1) || fail "second attest: $out"
echo "$out" | grep -q "(incremental replay)" || fail "the second attestation did not replay incrementally: $out"
echo "ok: vmv-verifier enroll, refs learn --platform, attest (trusted, then incremental)"

# --- SIGTERM: graceful stop, exit 0, the simulator gone
kill -TERM "$pid"
wait "$pid"; rc=$?
pid=
[ $rc -eq 0 ] || fail "vmv serve exited $rc on SIGTERM"
kill -0 "$swtpm_pid" 2>/dev/null && fail "swtpm ($swtpm_pid) still runs after vmv stopped"
[ -e "$T/state/swtpm/swtpm.pid" ] && fail "swtpm.pid left behind"
echo "ok: SIGTERM → exit 0, swtpm stopped"

# --- restart: the simulator starts again (a TPM reset), so recovery ends the epoch and starts the next
start_serve
quote=$(curl "${C[@]}" -H 'content-type: application/json' -d "{\"nonce\":\"$(openssl rand -hex 32)\",\"log\":{\"epoch\":$epoch,\"since\":$records}}" "https://localhost:$port/v1/quote") || fail "quote after restart"
echo "$quote" | grep -q "\"epoch\":$((epoch + 1)),\"epochInfo\":{\"reason\":\"TPM reset" || fail "no new epoch after a TPM reset: $quote"
echo "$quote" | grep -q '"since":0' || fail "the new epoch is not whole: $quote"
beyond=$(curl "${C[@]}" -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "{\"nonce\":\"$(openssl rand -hex 32)\",\"log\":{\"epoch\":$((epoch + 1)),\"since\":99999}}" "https://localhost:$port/v1/quote")
[ "$beyond" = 400 ] || fail "a cursor beyond the log answered $beyond"
kill -TERM "$pid"
wait "$pid"; rc=$?
pid=
[ $rc -eq 0 ] || fail "vmv serve exited $rc on the second SIGTERM"
echo "ok: restart (TPM reset) → epoch $((epoch + 1)), served whole to a verifier at epoch $epoch"
