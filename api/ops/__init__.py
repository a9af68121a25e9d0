"""For operators: `health` (probes), `observe` (`/usage` and `/metrics`), and the dashboard at
`/ui` (`ui`, its pages, and `session`, its signed login cookie)."""
