-- What deciding an approval needs, kept on its row so that a decision is one
-- compare-and-set on that row alone.
ALTER TABLE approvals ADD COLUMN pipeline TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN requested_by TEXT;
ALTER TABLE approvals ADD COLUMN allow_self INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN on_timeout TEXT NOT NULL DEFAULT 'reject';
ALTER TABLE approvals ADD COLUMN remind_every INTEGER;
