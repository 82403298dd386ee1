-- The service desk projector no longer keeps a copy of each ticket's domain state in its row:
-- a ticket it does not remember is continued from the fold of its stream's earlier events,
-- read from the log. The copy was three quarters of a ticket row, so every upsert, the
-- heap that ticket-by-id queries read, and a rebuild's load and index builds shrink with it.
-- (Dropping a column rewrites nothing; old rows lose the bytes as they are next updated.)
ALTER TABLE tickets DROP COLUMN state;
