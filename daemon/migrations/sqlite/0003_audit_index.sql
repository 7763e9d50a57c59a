-- Audit rows are read newest first and verified in order.
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
