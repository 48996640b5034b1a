-- wrk script: GET with `Authorization: DPoP <token>` and a `DPoP` proof, one line of the
-- file $PROOFS ("TOKEN PROOF", made by `portcullis-loadgen dpop-proofs`) per request. Each
-- proof is accepted once, so thread k of n takes lines k, k+n, k+2n, …; a thread that runs
-- out starts over, and those replays come back 401 (counted in non_2xx).
local lines = {}
local threads = 0
local next_id = 0
setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  threads = threads + 1
end
init = function(args)
  local n = tonumber(os.getenv("WRK_THREADS") or "2")
  local i = 0
  for line in io.lines(os.getenv("PROOFS")) do
    if i % n == id then
      local space = line:find(" ", 1, true)
      lines[#lines + 1] = { line:sub(1, space - 1), line:sub(space + 1) }
    end
    i = i + 1
  end
  pos = 0
end
request = function()
  pos = pos % #lines + 1
  local l = lines[pos]
  return wrk.format("GET", "/api/items", { ["Authorization"] = "DPoP " .. l[1], ["DPoP"] = l[2] })
end
dofile(os.getenv("BENCH_DIR") .. "/report.lua")
