-- wrk script: mixed traffic against a running Healporium — 70 % reads by id, 20 % searches,
-- 10 % creates — for benches/load.sh. Environment: TOKEN (a bearer token, optional),
-- IDS (comma-separated Patient ids to read), FAMILIES (comma-separated family names to search).
-- Usage: TOKEN=… IDS=a,b FAMILIES=F1,F2 wrk -t2 -c16 -d30s -s benches/mixed.lua http://127.0.0.1:8080/fhir
local token = os.getenv("TOKEN")
local function split(s)
  local out = {}
  for v in string.gmatch(s or "", "[^,]+") do out[#out + 1] = v end
  return out
end
local ids = split(os.getenv("IDS"))
local families = split(os.getenv("FAMILIES"))
local base = ""
local headers = {}
local body = [[{"resourceType":"Patient","active":true,"name":[{"family":"Load","given":["Mixed"]}],"gender":"female","birthDate":"1980-05-17"}]]

function init(args)
  base = wrk.path
  if base == "/" then base = "" end
  if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
  headers["Accept"] = "application/fhir+json"
end

local counts = {read = 0, search = 0, create = 0}
function request()
  local r = math.random(100)
  if r <= 70 and #ids > 0 then
    return wrk.format("GET", base .. "/Patient/" .. ids[math.random(#ids)], headers)
  elseif r <= 90 and #families > 0 then
    return wrk.format("GET", base .. "/Patient?family=" .. families[math.random(#families)] .. "&_count=10", headers)
  else
    local h = {}
    for k, v in pairs(headers) do h[k] = v end
    h["Content-Type"] = "application/fhir+json"
    h["Prefer"] = "return=minimal"
    return wrk.format("POST", base .. "/Patient", h, body)
  end
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("mixed: %d requests, %.0f/s, p50 %.2f ms, p99 %.2f ms, non-2xx %d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, non2xx))
end
