-- Deleting an agent's whole AgentCore runtime (its last version is gone) and starting a new AgentCore deploy of the
-- agent exclude each other: `agentcore_removing_until` is the remover's lease. It is taken only while no other
-- deployment of the agent has a version (deploying ones included), and a new AgentCore deploy is refused while it
-- is held, so a deploy never adds its version to a runtime that is about to be deleted.
ALTER TABLE agents ADD COLUMN agentcore_removing_until INTEGER;
