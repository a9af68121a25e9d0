"""The Responses API (`/v1/responses`), served by every model group as chat jobs.

A Responses request is translated into an OpenAI chat body at the API (`request`), runs through
the same flow as chat (queue, cache, usage, retries, fallbacks, cancellation, access line), and
the chat answer is written back as a Response object (`output`) or the Responses event stream
(`stream`). Stored responses live in Redis through `inferq.broker.responses`. Modules here may
import `inferq.api` (errors, state, inference) and `inferq.broker`, never `inferq.workers`.
"""
