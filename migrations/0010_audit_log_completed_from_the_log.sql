-- The audit log stops copying what the log's own table already holds.
--
-- Where the log is the `events` table of this database, the projection keeps only the columns
-- auditors filter and sort on (position, stream, type, actor, correlation, time): the payload and
-- the other fields are read from `events` by position when a page is served. Copying them made
-- the read model as large as the log itself and its rebuild write every payload a second time.
-- Where the log is elsewhere (EventStoreDB), the projection still writes every column. Rows
-- written before this migration keep their copies; a rebuild drops them.
ALTER TABLE audit_log
    ALTER COLUMN version DROP NOT NULL,
    ALTER COLUMN event_id DROP NOT NULL,
    ALTER COLUMN schema_version DROP NOT NULL,
    ALTER COLUMN actor_role DROP NOT NULL,
    ALTER COLUMN command_id DROP NOT NULL,
    ALTER COLUMN causation_id DROP NOT NULL,
    ALTER COLUMN data DROP NOT NULL;
