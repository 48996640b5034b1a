-- wrk script: introspection of one valid access token (client_secret_basic).
wrk.method = "POST"
wrk.body = "token=" .. os.getenv("TOKEN")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BASIC")
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
