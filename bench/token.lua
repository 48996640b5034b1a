-- wrk script: client_credentials token requests (client_secret_basic).
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=invoices:read"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BASIC")
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
