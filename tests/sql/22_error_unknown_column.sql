SELECT nope FROM memories;
----
error[400]: Schema error: No field named nope.
Valid fields are memories.id, memories.memory, memories.cube_id, memories.user_id, memories.session_id, memories.agent_id, memories.app_id, memories.memory_type, memories.status, memories.key, memories.tags, memories.info, memories.source, memories.sources, memories.confidence, memories.created_at, memories.updated_at, memories.event_time, memories.version, memories.history, memories.event_id, memories.file_ids, memories.embedding.
