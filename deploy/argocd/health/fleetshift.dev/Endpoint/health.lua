-- Argo CD health check for fleetshift.dev/v1alpha1 Endpoint (Lua 5.1, as Argo CD runs it).
--   InService                            Healthy (Degraded if the spec's revision was rolled back)
--   Creating, Updating                   Progressing (Suspended while paused)
--   RollingBack, Failed, OutOfService,
--   UpdateRollbackFailed                 Degraded
--   no status yet, spec not yet observed Progressing
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function n(value)
  return string.format("%.0f", value or 0)
end

local function where(status)
  local step = status.step
  local green = "green " .. n(status.greenTrafficPercent) .. "%"
  if step == nil then
    return green
  end
  local stage = step.stage or "Provisioning"
  if step.total ~= nil and step.total > 0 and stage ~= "Provisioning" then
    return stage .. " step " .. n(step.index) .. "/" .. n(step.total) .. ", " .. green
  end
  return stage .. ", " .. green
end

local function revision(value)
  if value == nil then
    return "?"
  end
  return value
end

local function degraded_message(status, fallback)
  local degraded = condition(status, "Degraded")
  if degraded ~= nil and degraded.status == "True" and degraded.message ~= nil then
    return degraded.message
  end
  if status.lastDeployment ~= nil and status.lastDeployment.reason ~= nil then
    return fallback .. ": " .. status.lastDeployment.reason
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Fleetshift operator to reconcile the Endpoint"
  return hs
end

local status = obj.status
local phase = status.phase
local generation = obj.metadata.generation

if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. n(generation)
  return hs
end

if phase == "RollingBack" then
  hs.status = "Degraded"
  hs.message = "Rolling back " .. revision(status.candidateRevision) .. " to "
    .. revision(status.activeRevision) .. ": " .. (status.rollbackReason or "rollback")
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = degraded_message(status, "Creating the endpoint failed")
  return hs
end

if phase == "UpdateRollbackFailed" then
  hs.status = "Degraded"
  hs.message = "Rollback of " .. revision(status.candidateRevision) .. " to "
    .. revision(status.activeRevision) .. " is blocked until blue is Ready again: "
    .. (status.rollbackReason or "rollback")
  return hs
end

if phase == "OutOfService" then
  hs.status = "Degraded"
  hs.message = degraded_message(status, "No Ready replica serves revision " .. revision(status.activeRevision))
  return hs
end

if phase == "Creating" or phase == "Updating" then
  local target = revision(status.candidateRevision)
  if status.paused == true then
    hs.status = "Suspended"
    hs.message = "Rollout of " .. target .. " paused at " .. where(status)
      .. "; remove the fleetshift.dev/paused annotation to resume"
    return hs
  end
  hs.status = "Progressing"
  if phase == "Creating" then
    hs.message = "Creating " .. target .. ": " .. where(status)
  else
    hs.message = "Deploying " .. target .. " over " .. revision(status.activeRevision)
      .. ": " .. where(status)
  end
  local degraded = condition(status, "Degraded")
  if degraded ~= nil and degraded.status == "True" and degraded.message ~= nil then
    hs.message = hs.message .. "; " .. degraded.message
  end
  return hs
end

if phase == "InService" then
  local degraded = condition(status, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    hs.status = "Degraded"
    hs.message = degraded.message or ("Revision " .. revision(status.rolledBackRevision) .. " was rolled back")
    return hs
  end
  hs.status = "Healthy"
  hs.message = "Revision " .. revision(status.activeRevision) .. " serving"
  if status.paused == true then
    hs.message = hs.message .. " (paused: the next deployment will hold at its first step)"
  end
  return hs
end

if phase == "Deleting" then
  hs.status = "Progressing"
  hs.message = "Deleting"
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. tostring(phase)
return hs
