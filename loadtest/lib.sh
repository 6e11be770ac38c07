# Shell helpers shared by loadtest/bench and loadtest/profile (sourced, not run).

# Background processes started with `start`; `stop_all` kills them (call it from an EXIT trap).
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
# start NAME CMD...: runs a server in the background, remembers its pid as $NAME
start() { local name=$1; shift; "$@" >/dev/null 2>&1 & pids+=($!); printf -v "$name" '%s' "$!"; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1])" "$1" 2>/dev/null && return; sleep 0.1; done; echo "not up: $1" >&2; exit 1; }
