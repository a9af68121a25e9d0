"""The path of one job through Redis, in either lane (interactive or batch).

`queue` (the API's side: streams exist, enqueue under admission, queue depth and lag),
`consumer` (the workers' side: pull, publish replies, then acknowledge, retry, move or
dead-letter), `replies` (the API's one pub/sub subscription, routed to waiting requests),
`cancel` (abandoned jobs announced to every worker), `results` (a finished job's durable record,
written in the step that acknowledges it) and `cache` (the response cache that answers before
anything is queued).

May import the broker's root modules and `inferq.config`; not `broker.batch` or `broker.ops`.
"""
