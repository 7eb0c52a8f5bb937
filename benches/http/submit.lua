-- wrk script: single-task submits, `POST /tasks` with one `echo` task per request.
--   WRANGLE_DATABASE_URL=memory WRANGLE_RATE_LIMIT=1000000 \
--     cargo run --release --example coordinator -- --bind 127.0.0.1:7700 &
--   wrk -t2 -c64 -d8s -s benches/http/submit.lua http://127.0.0.1:7700/tasks
-- (the default rate limit, 50,000 requests/s per client, would answer 429 past it: this
-- measures the server with the limiter still checking every request). The last line
-- counts answers that were not 2xx, and connection errors and timeouts: all must be 0.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"task_type":"echo","payload":{"n":1}}'
done = function(summary, latency, requests)
  io.write(string.format("non-2xx %d, connect errors %d, timeouts %d\n",
    summary.errors.status, summary.errors.connect, summary.errors.timeout))
end
