"""Virtual keys at the door: `principal` (who a request is), `cache` (key records held in each
API process, kept current by pub/sub), `guard` (models, limits and budgets a key may use),
`throttle` (failed authentications per client address), `fairshare` (each key's share of a
group), `routes` (LiteLLM's `/key/*`) and `teams` (LiteLLM's `/team/*`: a team's weight)."""
