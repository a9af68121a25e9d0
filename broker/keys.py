"""Every Redis key and channel name, in one place.

Keys of one model group share a hash tag (`{group}`) so they land in one Redis Cluster slot.
"""

from dataclasses import dataclass

from inferq.broker.messages import Lane

CONSUMER_GROUP = "workers"
JOB_FIELD = b"job"


def beside(key: str, suffix: str) -> str:
    """A key name in the same Redis Cluster slot as `key` (for a marker guarding it): `key`'s
    own hash tag if it has one, else all of `key` made the tag."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    if start >= 0 and end > start + 1:
        return f"{key}:{suffix}"
    return f"{{{key}}}:{suffix}"


@dataclass(frozen=True)
class Keys:
    """Key names under a configurable prefix (default `inferq`)."""

    prefix: str = "inferq"

    def jobs(self, group: str) -> str:
        """Stream of interactive jobs for a model group."""
        return f"{self.prefix}:{{{group}}}:jobs"

    def batch(self, group: str) -> str:
        """Stream of batch jobs for a model group (same consumer group; taken after `jobs`)."""
        return f"{self.prefix}:{{{group}}}:batch"

    def stream(self, group: str, lane: Lane) -> str:
        """The stream of a group's lane."""
        return self.batch(group) if lane is Lane.BATCH else self.jobs(group)

    def dead(self, group: str) -> str:
        """Dead-letter stream of a model group: jobs that could not be processed."""
        return f"{self.prefix}:{{{group}}}:dead"

    def delayed(self, group: str, lane: Lane = Lane.INTERACTIVE) -> str:
        """Sorted set of a lane's jobs waiting out a retry backoff, scored by when they may run
        (one per lane, so a due retry goes back to the stream it came from)."""
        if lane is Lane.BATCH:
            return f"{self.prefix}:{{{group}}}:batch:delayed"
        return f"{self.prefix}:{{{group}}}:delayed"

    def progress(self, group: str, job_id: str) -> str:
        """List of the reply messages a stream job has published so far (for a reclaimer)."""
        return f"{self.prefix}:{{{group}}}:progress:{job_id}"

    def failures(self, group: str, deployment: str) -> str:
        """Counter of a deployment's failures in the current minute."""
        return f"{self.prefix}:{{{group}}}:fails:{deployment}"

    def cooldown(self, group: str, deployment: str) -> str:
        """Present (with a TTL) while a deployment cools down."""
        return f"{self.prefix}:{{{group}}}:cooldown:{deployment}"

    def usage_window(self, group: str, deployment: str, minute: int) -> str:
        """Hash of requests and tokens a deployment used in one minute (rpm/tpm pacing)."""
        return f"{self.prefix}:{{{group}}}:window:{deployment}:{minute}"

    def replica_probe(self) -> str:
        """A tiny write made before WAIT, so WAIT covers every write before it (replicas)."""
        return f"{self.prefix}:replica-probe"

    def result(self, job_id: str) -> str:
        """A finished job's durable result record (a JSON `Outcome`), with a TTL."""
        return f"{self.prefix}:result:{{{job_id}}}"

    def submission(self, submission_id: str) -> str:
        """Hash of a batch submission's counters and flags (`succeeded`, `failed`,
        `cancelled`, `closed`...)."""
        return f"{self.prefix}:submission:{{{submission_id}}}"

    def submission_jobs(self, submission_id: str) -> str:
        """Hash of a submission's enqueued requests: custom_id → job id."""
        return f"{self.prefix}:submission:{{{submission_id}}}:jobs"

    def submission_results(self, submission_id: str) -> str:
        """Stream of a submission's finished jobs, in the order they finished."""
        return f"{self.prefix}:submission:{{{submission_id}}}:results"

    def submission_counted(self, submission_id: str) -> str:
        """Set of a submission's jobs whose result is counted (on a cluster, where counting
        is a step apart from storing the record)."""
        return f"{self.prefix}:submission:{{{submission_id}}}:counted"

    def cache(self, namespace: str, digest: str) -> str:
        """A cached answer."""
        return f"{self.prefix}:cache:{namespace}:{digest}"

    def flight(self, namespace: str, digest: str) -> str:
        """Marks an answer being produced now (single flight), with the owner's job id."""
        return f"{self.prefix}:flight:{namespace}:{digest}"

    def usage(self, day: str, dimension: str, value: str) -> str:
        """Hash of one day's totals for one group, deployment or key."""
        return f"{self.prefix}:usage:{day}:{dimension}:{value}"

    def usage_index(self, day: str) -> str:
        """Set of the dimension/value pairs that have totals on a day."""
        return f"{self.prefix}:usage:{day}:index"

    def usage_log(self) -> str:
        """Capped stream of per-request usage records."""
        return f"{self.prefix}:usage:log"

    def cancel(self) -> str:
        """Pub/sub channel on which API processes announce cancelled jobs to every worker."""
        return f"{self.prefix}:cancel"

    def file(self, file_id: str) -> str:
        """Hash of one uploaded or generated file (`/v1/files`): `meta` (JSON) and `content`."""
        return f"{self.prefix}:file:{file_id}"

    def files(self) -> str:
        """Sorted set of file ids by creation time (for listing)."""
        return f"{self.prefix}:files"

    def response(self, response_id: str) -> str:
        """String of one stored `/v1/responses` response and the conversation it ends (JSON)."""
        return f"{self.prefix}:response:{response_id}"

    def batch_record(self, batch_id: str) -> str:
        """Hash of one `/v1/batches` batch: its fields, each JSON-encoded."""
        return f"{self.prefix}:batchapi:{batch_id}"

    def batch_index(self) -> str:
        """Sorted set of batch ids by creation time (for listing)."""
        return f"{self.prefix}:batchapi:index"

    def batch_active(self) -> str:
        """Set of batch ids not yet in a final state (what API processes drive)."""
        return f"{self.prefix}:batchapi:active"

    def batch_lease(self, batch_id: str) -> str:
        """Which API process drives a batch now; expires unless renewed."""
        return f"{self.prefix}:batchapi:lease:{batch_id}"

    def control(self) -> str:
        """Pub/sub channel on which `inferq reload` asks every API and worker process to act."""
        return f"{self.prefix}:control"

    def control_log(self) -> str:
        """Capped stream of the answers processes give to control requests."""
        return f"{self.prefix}:control:log"

    def reply(self, api_id: str) -> str:
        """Pub/sub channel an API process listens on for all of its jobs' replies (its own hash
        tag: on a cluster it is a sharded channel, living on the node of its slot)."""
        return f"{self.prefix}:reply:{{{api_id}}}"

    def moving(self, group: str) -> str:
        """Hash of a group's jobs being moved to another group's stream on a cluster (entry →
        the job as moved): a reclaimer finishes the move instead of serving the job again."""
        return f"{self.prefix}:{{{group}}}:moving"

    def moved(self, group: str, job_id: str, attempts: int) -> str:
        """Present once a job (after `attempts` attempts) was appended to this group's stream by
        a move from another group, so a move repeated after a crash appends it once."""
        return f"{self.prefix}:{{{group}}}:moved:{job_id}:{attempts}"

    def worker(self, worker_id: str) -> str:
        """Hash describing one live worker; it expires unless heartbeats renew it."""
        return f"{self.prefix}:worker:{worker_id}"

    def workers(self) -> str:
        """Sorted set of worker ids scored by the time their heartbeat expires."""
        return f"{self.prefix}:workers"

    def vkey(self, token_hash: str) -> str:
        """A virtual key's record (JSON), named by the SHA-256 of the key: never the key."""
        return f"{self.prefix}:vkey:{token_hash}"

    def vkeys(self) -> str:
        """Hash of every virtual key: its SHA-256 → its alias (or "")."""
        return f"{self.prefix}:vkeys"

    def vkeys_version(self) -> str:
        """Counter bumped on every key change (API processes' caches compare it)."""
        return f"{self.prefix}:vkeys:version"

    def vkeys_used(self) -> str:
        """Hash of when each virtual key was last used: its id → unix time."""
        return f"{self.prefix}:vkeys:used"

    def vkeys_channel(self) -> str:
        """Pub/sub channel announcing a changed or revoked key (its SHA-256) to API processes."""
        return f"{self.prefix}:vkeys:changed"

    def key_spend(self, key_id: str, period: str) -> str:
        """USD a virtual key spent in one budget period (INCRBYFLOAT)."""
        return f"{self.prefix}:vkey:spend:{key_id}:{period}"

    def key_window(self, key_id: str, minute: int) -> str:
        """Hash of a virtual key's requests and tokens in one minute (rpm/tpm limits)."""
        return f"{self.prefix}:vkey:{{{key_id}}}:window:{minute}"

    def key_running(self, key_id: str) -> str:
        """Sorted set of a virtual key's requests in flight, scored by their deadline."""
        return f"{self.prefix}:vkey:{{{key_id}}}:running"

    def owners(self) -> str:
        """Hash of which virtual key owns each file and batch: object id → the key's hash."""
        return f"{self.prefix}:owners"

    def team(self, team_id: str) -> str:
        """A team's record (JSON): its alias, weight and metadata."""
        return f"{self.prefix}:team:{team_id}"

    def teams(self) -> str:
        """Set of every team id."""
        return f"{self.prefix}:teams"

    def auth_failures(self, address: str) -> str:
        """Failed authentications from one client address (INCR; expires a window after the
        first)."""
        return f"{self.prefix}:authfail:{address}"

    def shares(self) -> str:
        """Hash of each API process's fair-share view: process → JSON of each group's keys'
        requests in flight and waiting (for `inferq status`)."""
        return f"{self.prefix}:shares"
