#!/usr/bin/env bash
# Self-check for test/http_server.py, the local HTTP server used by the TAP
# tests and the benchmark.  Starts it on a free port, exercises every
# endpoint with curl, prints PASS/FAIL per check and exits non-zero if any
# check failed.  Needs only bash, curl and python3.
#
#   bash test/http_server_test.sh

set -u

HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
SERVER_PID=
FAILURES=0
CHECKS=0

cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

pass() { CHECKS=$((CHECKS + 1)); echo "PASS: $1"; }
fail() {
    CHECKS=$((CHECKS + 1)); FAILURES=$((FAILURES + 1))
    echo "FAIL: $1${2:+ -- $2}"
}

# expect_eq NAME EXPECTED ACTUAL
expect_eq() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected '$2', got '$3'"; fi
}

# expect_true NAME DETAIL COMMAND...
expect_true() {
    local name=$1 detail=$2; shift 2
    if "$@"; then pass "$name"; else fail "$name" "$detail"; fi
}

# One long-lived python3 evaluates JSON queries (python3 is slow to start).
# Protocol: FILE, N, then N Python expressions over the document `d`, one a
# line; the answer is one line with the results separated by spaces, strings
# raw and anything else as JSON.
coproc PYJSON {
    exec python3 -u -c 'import json, sys
def show(d, expr):
    try:
        v = eval(expr, {"d": d})
    except Exception as e:
        return f"<{type(e).__name__}: {e}>"
    return v if isinstance(v, str) else json.dumps(v)
for path in sys.stdin:
    exprs = [sys.stdin.readline().rstrip("\n")
             for _ in range(int(sys.stdin.readline()))]
    try:
        with open(path.rstrip("\n"), "rb") as f:
            d = json.load(f)
    except ValueError as e:
        print(f"<invalid JSON: {e}>")
        continue
    print(" ".join(show(d, e) for e in exprs).replace("\n", "\\n"))'
}

# jget FILE EXPR...: query the JSON document in FILE.
jget() {
    local file=$1 line; shift
    printf '%s\n%d\n' "$file" "$#" >&"${PYJSON[1]}"
    printf '%s\n' "$@" >&"${PYJSON[1]}"
    IFS= read -r line <&"${PYJSON[0]}"
    printf '%s\n' "$line"
}

# http CURL-ARGS...: sets STATUS, BODY; headers are kept in $TMP/headers.
http() {
    STATUS=$(curl -s -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' \
                  --max-time 10 "$@")
    BODY=$(cat "$TMP/body")
}

# header NAME: value of the last NAME header of the last http call.
header() {
    grep -i "^$1:" "$TMP/headers" | tail -n 1 | cut -d: -f2- \
        | sed -e 's/^ *//' -e 's/\r$//'
}

body() { jget "$TMP/body" "$@"; }

# after_head: read a raw response, print its Content-Length and the number
# of bytes after the header block.
after_head() {
    awk 'BEGIN { RS = "\r\n\r\n" }
         NR == 1 { if (match($0, /Content-Length: [0-9]+/))
                       len = substr($0, RSTART + 16, RLENGTH - 16) }
         NR > 1 { rest += length($0) }
         END { print len, rest + 0 }'
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
less_than() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# raw_request BYTES: send BYTES on a fresh TCP connection, print the reply
# (the server must close the connection).
raw_request() {
    exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
    printf '%b' "$1" >&3
    timeout 5 cat <&3
    exec 3<&- 3>&-
}

# ---------------------------------------------------------------- startup
python3 "$HERE/http_server.py" --port-file "$TMP/port" --token secret \
    >"$TMP/stdout" 2>"$TMP/stderr" &
SERVER_PID=$!
for _ in $(seq 100); do
    [ -s "$TMP/port" ] && grep -q listening "$TMP/stdout" && break
    sleep 0.05
done
PORT=$(cat "$TMP/port" 2>/dev/null)
if [ -z "$PORT" ]; then
    fail "server starts" "$(cat "$TMP/stderr")"
    exit 1
fi
B="http://127.0.0.1:$PORT"
expect_eq "startup: stdout line" "listening on 127.0.0.1:$PORT" "$(head -n 1 "$TMP/stdout")"
expect_eq "startup: no temp file left beside the port file" "port" "$(cd "$TMP" && echo port*)"

# ---------------------------------------------------------------- Zendesk
http "$B/api/v2/tickets/7.json"
expect_eq "zendesk GET odd: status" 200 "$STATUS"
expect_eq "zendesk GET odd: ticket" \
    '{"id": 7, "subject": "Ticket 7", "priority": "low", "status": "open", "requester_id": 1007}' \
    "$(body 'd["ticket"]')"
http "$B/api/v2/tickets/8.json"
expect_eq "zendesk GET even: priority high" high "$(body 'd["ticket"]["priority"]')"
expect_eq "zendesk GET: Content-Type" application/json "$(header Content-Type)"
http "$B/api/v2/tickets/abc.json"
expect_eq "zendesk GET bad id: 404" "404 RecordNotFound" "$STATUS $(body 'd["error"]')"
http -X PUT -H 'Content-Type: application/json' \
    -d '{"ticket": {"status": "solved", "custom": 1}}' "$B/api/v2/tickets/9.json"
expect_eq "zendesk PUT: merged" "200 solved 1 Ticket 9 9" \
    "$STATUS $(body 'd["ticket"]["status"]' 'd["ticket"]["custom"]' 'd["ticket"]["subject"]' 'd["ticket"]["id"]')"
http -X PUT -d 'not json' "$B/api/v2/tickets/9.json"
expect_eq "zendesk PUT invalid body: 400" 400 "$STATUS"
http -X DELETE "$B/api/v2/tickets/9.json"
expect_eq "zendesk DELETE: 405 with Allow" "405 GET, HEAD, PUT" "$STATUS $(header Allow)"

# ---------------------------------------------------------------- ClickUp
TASK='{"name": "Ticket 7", "priority": 4}'
http -X POST -d "$TASK" "$B/api/v2/list/901/task"
expect_eq "clickup no auth: 401" "401 Token invalid OAUTH_025" "$STATUS $(body 'd["err"]' 'd["ECODE"]')"
http -X POST -H 'Authorization: wrong' -d "$TASK" "$B/api/v2/list/901/task"
expect_eq "clickup wrong token: 401" 401 "$STATUS"
http -X POST -H 'Authorization: secret' -d '{"title": "x"}' "$B/api/v2/list/901/task"
expect_eq "clickup missing name: 400" "400 Task name invalid" "$STATUS $(body 'd["err"]')"
http -X POST -H 'Authorization: secret' -d 'garbage' "$B/api/v2/list/901/task"
expect_eq "clickup non-JSON body: 400" 400 "$STATUS"
WANT_ID="t$(printf '%s' "901Ticket 7key-1" | sha1sum | cut -c1-8)"
http -X POST -H 'Authorization: secret' -H 'Idempotency-Key: key-1' \
    -H 'Content-Type: application/json' -d "$TASK" "$B/api/v2/list/901/task"
expect_eq "clickup create: deterministic id" "200 $WANT_ID" "$STATUS $(body 'd["id"]')"
expect_eq "clickup create: fields" "Ticket 7 901 https://app.clickup.local/t/$WANT_ID" \
    "$(body 'd["name"]' 'd["list"]["id"]' 'd["url"]')"
http -X POST -H 'Authorization: secret' -H 'Idempotency-Key: key-1' \
    -H 'Content-Type: application/json' -d "$TASK" "$B/api/v2/list/901/task"
expect_eq "clickup repeat with same key: same task" "200 $WANT_ID" "$STATUS $(body 'd["id"]')"
http -X POST -H 'Authorization: secret' -H 'Idempotency-Key: key-2' \
    -d "$TASK" "$B/api/v2/list/901/task"
ID2=$(body 'd["id"]')
expect_true "clickup other key: new task" "got $ID2" [ "$ID2" != "$WANT_ID" ]
http "$B/_stats"
expect_eq "clickup repeat not counted: tasks_created" 2 "$(body 'd["tasks_created"]')"
http "$B/api/v2/task/$WANT_ID"
expect_eq "clickup GET task" "200 $WANT_ID Ticket 7" "$STATUS $(body 'd["id"]' 'd["name"]')"
http "$B/api/v2/task/tdeadbeef"
expect_eq "clickup GET unknown task: 404" 404 "$STATUS"

# ---------------------------------------------------------------- inspection
http -X POST "$B/_reset"
expect_eq "_reset: 200" 200 "$STATUS"
http "$B/_stats"
expect_eq "_reset clears stats and tasks" "1 0" "$(body 'd["requests"]' 'd["tasks_created"]')"
http "$B/api/v2/task/$WANT_ID"
expect_eq "_reset clears tasks" 404 "$STATUS"
http -X POST -H 'X-Custom-Header: Hello' -d 'payload' "$B/echo?a=1&b=two"
http "$B/_requests"
expect_eq "_requests: excludes /_requests and /_reset" \
    '["/_stats", "/api/v2/task/'"$WANT_ID"'", "/echo"]' "$(body '[r["path"] for r in d["requests"]]')"
expect_eq "_requests: entry fields" \
    'POST {"a": "1", "b": "two"} Hello payload true' \
    "$(body 'd["requests"][-1]["method"]' 'd["requests"][-1]["query"]' \
            'd["requests"][-1]["headers"]["x-custom-header"]' \
            'd["requests"][-1]["body"]' 'isinstance(d["requests"][-1]["at"], float)')"
http "$B/_stats"
expect_eq "_stats: fields" '["in_flight", "max_in_flight", "requests", "tasks_created"]' "$(body 'sorted(d)')"
expect_eq "_stats: in_flight counts itself" 1 "$(body 'd["in_flight"]')"

# ---------------------------------------------------------------- /slow
T0=$(now); http -X POST "$B/slow?ms=300"; T1=$(now)
expect_eq "/slow: body" '200 300' "$STATUS $(body 'd["slept"]')"
expect_true "/slow: took >= 0.3 s" "took $(elapsed "$T0" "$T1") s" less_than 0.3 "$(elapsed "$T0" "$T1")"
http "$B/slow?ms=abc"
expect_eq "/slow bad ms: 400" 400 "$STATUS"

# ---------------------------------------------------------------- /status
http "$B/status/418"
expect_eq "/status/418" '418 418' "$STATUS $(body 'd["status"]')"
http -X POST "$B/status/429?retry_after=7"
expect_eq "/status/429 with Retry-After" '429 7' "$STATUS $(header Retry-After)"
http "$B/status/204"
expect_eq "/status/204: no body" '204 0' "$STATUS $(wc -c <"$TMP/body")"
http "$B/status/500"
expect_eq "/status/500" 500 "$STATUS"

# ---------------------------------------------------------------- /flaky
SEQ=""
for _ in 1 2 3 4; do http "$B/flaky?key=a&fail=2"; SEQ="$SEQ $STATUS:$BODY"; done
expect_eq "/flaky fail=2" ' 503:{"attempt": 1} 503:{"attempt": 2} 200:{"attempts": 3} 200:{"attempts": 4}' "$SEQ"
http "$B/flaky?key=b&fail=1&code=429&retry_after=2"
expect_eq "/flaky code=429, retry_after" '429 2' "$STATUS $(header Retry-After)"
http "$B/flaky?key=b&fail=1&code=429"
expect_eq "/flaky keys are independent" 200 "$STATUS"
http -X POST "$B/_reset"
http "$B/flaky?key=a&fail=2"
expect_eq "/flaky counter cleared by _reset" '503 1' "$STATUS $(body 'd["attempt"]')"

# ---------------------------------------------------------------- /redirect
http "$B/redirect/3"
expect_eq "/redirect/3 without following" '302 /redirect/2' "$STATUS $(header Location)"
R=$(curl -s -L -w ' %{http_code} %{num_redirects}' "$B/redirect/3")
expect_eq "/redirect/3 followed" '{"redirected": true} 200 3' "$R"
http "$B/redirect-to?status=307&url=http%3A%2F%2F127.0.0.2%3A9%2Fx"
expect_eq "/redirect-to 307" '307 http://127.0.0.2:9/x' "$STATUS $(header Location)"
http "$B/redirect-to?status=200&url=/x"
expect_eq "/redirect-to with a status that is not a redirect: 400" 400 "$STATUS"

# ---------------------------------------------------------------- /echo, /text, 404, HEAD
http -X PATCH -H 'Content-Type: application/json' -H 'X-Trace: abc' \
    -d '{"k": [1, 2]}' "$B/echo?x=1&y="
expect_eq "/echo" 'PATCH /echo {"x": "1", "y": ""} abc {"k": [1, 2]} {"k": [1, 2]}' \
    "$(body 'd["method"]' 'd["path"]' 'd["query"]' 'd["headers"]["x-trace"]' 'd["body"]' 'd["json"]')"
http -d 'plain' "$B/echo"
expect_eq "/echo non-JSON body: json null" 'plain null' "$(body 'd["body"]' 'd["json"]')"
http -H 'Authorization: Bearer t0k' -d 'plain' "$B/echo64"
expect_eq "/echo64: the description, base64-encoded" 'Bearer t0k plain' \
    "$(body '__import__("json").loads(__import__("base64").b64decode(d["b64"]))["headers"]["authorization"]' \
            '__import__("json").loads(__import__("base64").b64decode(d["b64"]))["body"]')"
http "$B/text"
expect_eq "/text" '200 text/plain; charset=utf-8 plain text response' "$STATUS $(header Content-Type) $BODY"
http "$B/no/such/thing"
expect_eq "unknown path: 404" '404 not found' "$STATUS $(body 'd["error"]')"
R=$(raw_request 'HEAD /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' | after_head)
expect_eq "HEAD /text: Content-Length, no body" '19 0' "$R"
http -I "$B/api/v2/tickets/7.json"
expect_eq "HEAD zendesk ticket" '200 application/json' "$STATUS $(header Content-Type)"

# ---------------------------------------------------------------- protocol
R=$(curl -s -o /dev/null -o /dev/null -w '%{num_connects} ' "$B/text" "$B/echo")
expect_eq "keep-alive: second request reuses the connection" '1 0 ' "$R"
http -H 'Connection: close' "$B/text"
expect_eq "Connection: close honoured" close "$(header Connection)"
http --http1.0 "$B/text"
expect_eq "HTTP/1.0 defaults to close" close "$(header Connection)"
BIG=$(head -c 3000 /dev/zero | tr '\0' 'a')
T0=$(now); http -H 'Expect: 100-continue' -d "$BIG" "$B/echo"; T1=$(now)
expect_eq "Expect: 100-continue body read" '3000 100-continue' "$(body 'len(d["body"])' 'd["headers"].get("expect")')"
expect_true "Expect: 100-continue answered promptly" "took $(elapsed "$T0" "$T1") s" less_than "$(elapsed "$T0" "$T1")" 0.5
R=$(raw_request 'GARBAGE\r\n\r\n' | head -n 1 | tr -d '\r')
expect_eq "malformed request line: 400" 'HTTP/1.1 400 Bad Request' "$R"
R=$(raw_request 'GET /text HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n' | head -n 1 | tr -d '\r')
expect_eq "malformed header: 400" 'HTTP/1.1 400 Bad Request' "$R"
R=$(raw_request 'POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n' | head -n 1 | tr -d '\r')
expect_eq "malformed Content-Length: 400" 'HTTP/1.1 400 Bad Request' "$R"
R=$(raw_request 'GET /text HTTP/1.1\r\nHost: x\r\n\r\nGET /status/201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' | grep -o 'HTTP/1\.1 [0-9][0-9][0-9]' | tr '\n' ',')
expect_eq "pipelined requests on one connection" 'HTTP/1.1 200,HTTP/1.1 201,' "$R"

# ---------------------------------------------------------------- /never
R=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$B/never"; echo " rc=$?")
expect_eq "/never: client times out" '000 rc=28' "$R"
sleep 0.2
http "$B/_stats"
expect_eq "/never: released once the client hangs up" 1 "$(body 'd["in_flight"]')"

# ---------------------------------------------------------------- /huge
R=$(curl -s -w '%{http_code} %{size_download} %header{content-length}' -o "$TMP/huge.json" "$B/huge?mb=1")
expect_eq "/huge?mb=1: size and Content-Length" '200 1048576 1048576' "$R"
expect_eq "/huge?mb=1: valid JSON" 1048564 "$(jget "$TMP/huge.json" 'len(d["data"])')"
R=$(curl -s -w '%{http_code} %{size_download} [%header{content-length}] %header{connection}' -o "$TMP/huge.json" "$B/huge?mb=2&content_length=0")
expect_eq "/huge content_length=0: no length, closed" '200 2097152 [] close' "$R"
expect_eq "/huge content_length=0: valid JSON" 2097140 "$(jget "$TMP/huge.json" 'len(d["data"])')"
R=$(raw_request 'HEAD /huge?mb=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' | after_head)
expect_eq "HEAD /huge: Content-Length, no body" '3145728 0' "$R"
R=$(curl -s -o /dev/null --max-filesize 1000000 "$B/huge?mb=2"; echo "rc=$?")
expect_eq "/huge: client size limit trips on Content-Length" 'rc=63' "$R"
# (curl 7.88's --max-filesize ignores bodies of unknown size, so abort the
# length-less variant mid-stream with a timeout instead.)
R=$(curl -s -o /dev/null --limit-rate 2M --max-time 0.5 "$B/huge?mb=50&content_length=0"; echo "rc=$?")
expect_eq "/huge content_length=0: client aborts mid-stream" 'rc=28' "$R"
sleep 0.2
http "$B/_stats"
expect_eq "/huge: aborted downloads are released" 1 "$(body 'd["in_flight"]')"
RSS_BEFORE=$(ps -o rss= -p "$SERVER_PID" | tr -d ' ')
curl -s --limit-rate 100M -o /dev/null -w '%{size_download}' "$B/huge?mb=100" >"$TMP/huge.size" &
CURL_PID=$!
MAX_RSS=0
while kill -0 "$CURL_PID" 2>/dev/null; do
    RSS=$(ps -o rss= -p "$SERVER_PID" | tr -d ' ')
    [ -n "$RSS" ] && [ "$RSS" -gt "$MAX_RSS" ] && MAX_RSS=$RSS
    sleep 0.02
done
wait "$CURL_PID"
expect_eq "/huge?mb=100: whole body downloaded" 104857600 "$(cat "$TMP/huge.size")"
expect_true "/huge?mb=100: server RSS stays under 60 MB" \
    "max RSS $((MAX_RSS / 1024)) MB (before: $((RSS_BEFORE / 1024)) MB)" [ "$MAX_RSS" -lt 61440 ]
echo "      (server RSS before ${RSS_BEFORE} kB, max during download ${MAX_RSS} kB)"

# ---------------------------------------------------------------- concurrency
http -X POST "$B/_reset"
: >"$TMP/urls"
for _ in $(seq 250); do printf 'url = "%s"\noutput = "/dev/null"\n' "$B/slow?ms=200" >>"$TMP/urls"; done
T0=$(now)
PIDS=()
for i in 1 2; do      # curl caps --parallel-max at 300, so use two of them
    curl -s -Z --parallel-immediate --parallel-max 250 -K "$TMP/urls" \
        -w '%{http_code}\n' >"$TMP/par.$i" 2>/dev/null &
    PIDS+=($!)
done
wait "${PIDS[@]}"
T1=$(now)
OK=$(cat "$TMP/par.1" "$TMP/par.2" | grep -c '^200$')
expect_eq "500 concurrent /slow?ms=200: all 200" 500 "$OK"
expect_true "500 concurrent /slow?ms=200: well under 2 s" "took $(elapsed "$T0" "$T1") s" less_than "$(elapsed "$T0" "$T1")" 1.5
echo "      (500 concurrent requests took $(elapsed "$T0" "$T1") s)"
http "$B/_stats"
MAXF=$(body 'd["max_in_flight"]')
expect_true "_stats: max_in_flight >= 400" "max_in_flight=$MAXF" [ "$MAXF" -ge 400 ]
expect_eq "_stats: requests counted" 501 "$(body 'd["requests"]')"

# ---------------------------------------------------------------- shutdown
curl -s -o /dev/null --max-time 10 "$B/never" &
NEVER_PID=$!
sleep 0.2
kill -TERM "$SERVER_PID"
T0=$(now)
wait "$SERVER_PID"; RC=$?
T1=$(now)
SERVER_PID=
expect_eq "SIGTERM: exit status 0" 0 "$RC"
expect_true "SIGTERM: exits promptly with a hanging connection open" "took $(elapsed "$T0" "$T1") s" less_than "$(elapsed "$T0" "$T1")" 2
wait "$NEVER_PID"; RC=$?
expect_true "SIGTERM: hanging client sees the connection closed" "curl rc=$RC" [ "$RC" -ne 28 ]
expect_eq "SIGTERM: nothing on stderr" "" "$(cat "$TMP/stderr")"

echo
if [ "$FAILURES" -eq 0 ]; then
    echo "ALL $CHECKS CHECKS PASSED"
else
    echo "$FAILURES OF $CHECKS CHECKS FAILED"
    exit 1
fi
