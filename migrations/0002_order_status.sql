-- Drizzle's layout: statements separated by breakpoint comments.
CREATE TYPE order_status AS ENUM ('open', 'paid', 'shipped');
--> statement-breakpoint
ALTER TABLE orders ADD COLUMN status order_status NOT NULL DEFAULT 'open';
--> statement-breakpoint
COMMENT ON COLUMN orders.status IS 'lifecycle; shipped orders are never deleted';
