"""The interactive path: inference routes, from an HTTP body to a job and from replies back.

`chat` (chat completions, completions, embeddings), `messages` (Anthropic's Messages API),
`models` (`/v1/models`), `requests` (a body read into a job and its chain of groups), `live`
(which groups have a live worker), `cache` (the response cache policy), `flow` (the path every
route shares: cache, listen, enqueue, await) and `replies` and `relay` (answers as JSON or SSE).
"""
