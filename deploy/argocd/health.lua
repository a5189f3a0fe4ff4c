-- Argo CD health of Pomona's custom resources (mdm.pomona.dev: DeviceGroup, Profile,
-- Restrictions, DeviceLabels, DeviceAction). Pomona writes kstatus conditions Ready,
-- Reconciling and Stalled, each with the generation it judged (observedGeneration):
--   Stalled=True for the current generation  -> Degraded (invalid, a group missing, devices
--                                               failing: a human has to act)
--   no condition for the current generation  -> Progressing (Pomona has not looked yet)
--   Reconciling=True                          -> Progressing (rolling out, being deleted)
--   Ready=True                                -> Healthy
--   otherwise                                 -> Progressing (devices pending)
-- The message is the condition's reason and message. Same script for every kind: the
-- argocd-cm.yaml entries must stay copies of this file (tests/deploy.rs checks).
local hs = {status = "Progressing", message = "Waiting for Pomona to report a status"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local conditions = {}
for _, c in ipairs(obj.status.conditions) do
  if c.type ~= nil then
    conditions[c.type] = c
  end
end
local function judged(c)
  if c == nil then
    return nil
  end
  return c.observedGeneration or obj.status.observedGeneration
end
local function current(c)
  if c == nil then
    return false
  end
  local observed = judged(c)
  return generation == nil or (observed ~= nil and observed >= generation)
end
local function says(c)
  local message = c.message
  if message == nil or message == "" then
    message = (conditions.Ready and conditions.Ready.message) or ""
  end
  if c.reason == nil or c.reason == "" then
    return message
  end
  if message == "" then
    return c.reason
  end
  return c.reason .. ": " .. message
end
local ready, reconciling, stalled = conditions.Ready, conditions.Reconciling, conditions.Stalled
if stalled ~= nil and stalled.status == "True" and current(stalled) then
  return {status = "Degraded", message = says(stalled)}
end
if not current(ready) then
  local observed = judged(ready)
  if observed == nil then
    hs.message = "Waiting for Pomona to observe generation " .. tostring(generation)
  else
    hs.message = "Waiting for Pomona to observe generation " .. tostring(generation) ..
      " (status is for generation " .. tostring(observed) .. ")"
  end
  return hs
end
if reconciling ~= nil and reconciling.status == "True" and current(reconciling) then
  return {status = "Progressing", message = says(reconciling)}
end
if ready.status == "True" then
  return {status = "Healthy", message = says(ready)}
end
return {status = "Progressing", message = says(ready)}
