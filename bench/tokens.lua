-- wrk script: GET with a bearer token drawn at random from the file $TOKENS (one per line);
-- with $TOKENS unset, no Authorization header (direct and plain-proxy baselines).
local tokens = {}
local file = os.getenv("TOKENS")
if file and file ~= "" then
  for line in io.lines(file) do tokens[#tokens + 1] = line end
end
math.randomseed(os.time())
request = function()
  if #tokens == 0 then return wrk.format("GET", "/api/items") end
  local t = tokens[math.random(#tokens)]
  return wrk.format("GET", "/api/items", { ["Authorization"] = "Bearer " .. t })
end
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
