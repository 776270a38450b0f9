-- Runs in one transaction with its history row, like every file without a marker.
CREATE UNIQUE INDEX accounts_email_key ON accounts (lower(email));
CREATE INDEX orders_account_id_idx ON orders (account_id);
