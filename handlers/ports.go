package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pathling-sync/pathling-sync/messages"
)

// This file holds the ports of the sync handler: the types and the small
// interfaces it needs from the outside world. Clients implement them
// (clients/redisstore, clients/natsbus, clients/pathling); cmd wires them.

// ImportParams are the kick-off parameters of a run, resolved once when the
// run is created (since "auto" already replaced by the watermark) and stored
// in the run record, so that an adopting driver re-kicks with exactly the same
// parameters.
type ImportParams struct {
	ExportURL             string     `json:"exportUrl"`
	SaveMode              string     `json:"saveMode"`
	Types                 []string   `json:"types,omitempty"`
	Elements              []string   `json:"elements,omitempty"`
	TypeFilters           []string   `json:"typeFilters,omitempty"`
	IncludeAssociatedData []string   `json:"includeAssociatedData,omitempty"`
	Since                 *time.Time `json:"since,omitempty"`
	Until                 *time.Time `json:"until,omitempty"`
}

// JobState is what a poll of a Pathling job said.
type JobState int

const (
	JobRunning JobState = iota
	JobDone
	JobFailed
	JobLost // 404: unknown job, deleted, or Pathling restarted
)

// JobStatus is one poll's answer.
type JobStatus struct {
	State      JobState
	Progress   string        // X-Progress as sent ("42%"), empty when absent
	RetryAfter time.Duration // 0 when absent
	// Done:
	TransactionTime string // as Pathling reported it
	Outputs         int
	// Failed:
	Failure *PathlingError
	// ServerDate is the response's Date header (Pathling's clock, whole
	// seconds); zero when absent. The driver measures clock skew with it.
	ServerDate time.Time
}

// KickedOff is Pathling's answer to an accepted kick-off.
type KickedOff struct {
	StatusURL  string
	ServerDate time.Time // the response's Date header; zero when absent
}

// PathlingError is a failure reported by or while talking to Pathling,
// already classified: the decision (retryable or not, which reason) travels
// with the error.
type PathlingError struct {
	Reason           messages.Reason // import_failed, rejected, unauthorized, unavailable, job_lost
	Empty            bool            // "No files with extension ... were downloaded"
	Retryable        bool
	HTTPStatus       int
	Message          string          // human readable, no secrets
	OperationOutcome json.RawMessage // as Pathling sent it, when it did
	RetryAfter       time.Duration
}

func (e *PathlingError) Error() string {
	if e.HTTPStatus != 0 {
		return fmt.Sprintf("pathling: %s (HTTP %d): %s", e.Reason, e.HTTPStatus, e.Message)
	}
	return fmt.Sprintf("pathling: %s: %s", e.Reason, e.Message)
}

// Pathling is what a run needs of one Pathling server. Errors of KickOff,
// Status and Delete are *PathlingError (or a context error); job outcomes
// come in JobStatus.
type Pathling interface {
	KickOff(ctx context.Context, p ImportParams) (KickedOff, error)
	Status(ctx context.Context, statusURL string) (JobStatus, error)
	Delete(ctx context.Context, statusURL string) error
	// NormalizeExportURL turns a source URL as a request names it (its FHIR
	// base or its .../$export endpoint) into what this Pathling expects in
	// exportUrl; the allowlist is matched against the result. An error
	// (the URL is not acceptable) rejects the request; it must not contain
	// the URL's secrets.
	NormalizeExportURL(raw string) (string, error)
}

// RunState is the state of a run record.
type RunState string

const (
	RunStarting  RunState = "starting"    // record created, no kick-off sent yet
	RunKicking   RunState = "kicking_off" // kick-off sent, status URL not yet known
	RunPolling   RunState = "polling"     // status URL known
	RunCompleted RunState = "completed"   // terminal
	RunFailed    RunState = "failed"      // terminal
)

// Terminal reports whether no more work will be done for the run.
func (s RunState) Terminal() bool { return s == RunCompleted || s == RunFailed }

// Run is the record of one request's sync, kept in the store under the
// target's lock. Every write is fenced by the lease token.
type Run struct {
	RunID        string                 `json:"runId"`
	RequestID    string                 `json:"requestId"`
	Target       string                 `json:"target"`
	State        RunState               `json:"state"`
	Token        int64                  `json:"token"` // fencing token of the last writer
	Driver       string                 `json:"driver,omitempty"`
	Request      messages.SyncRequested `json:"request"`
	Params       ImportParams           `json:"params"`
	WatermarkKey string                 `json:"watermarkKey"`
	StatusURL    string                 `json:"statusUrl,omitempty"`
	Progress     string                 `json:"progress,omitempty"`
	// ExpectedEnd is when the running job is expected to end (polling.go),
	// as of the last poll; zero when unknown. For status only.
	ExpectedEnd  time.Time `json:"expectedEnd,omitzero"`
	Attempts     int       `json:"attempts"` // kick-offs sent
	Polls        int       `json:"polls"`
	Losses       int       `json:"losses"` // 404s of a job we started
	StartedAt    time.Time `json:"startedAt"`
	FirstKickOff time.Time `json:"firstKickOff,omitzero"` // watermark base
	UpdatedAt    time.Time `json:"updatedAt"`
	Deadline     time.Time `json:"deadline"`
	FinishedAt   time.Time `json:"finishedAt,omitzero"`
	Outcome      *Event    `json:"outcome,omitempty"` // set when terminal; re-published on redelivery
}

// Lease is a held target lock. Token is the fencing token every write carries.
type Lease struct {
	Target    string
	RequestID string
	Token     int64
	// Expires is when the lock lapses unless renewed, by the holder's clock:
	// the time before the call that granted or last renewed it, plus the TTL.
	// Store writes that fail for a transient reason are retried until
	// shortly before it; zero means unknown (no retries). Stores ignore it.
	Expires time.Time
}

// AcquireRequest asks for a target's lock on behalf of a request.
type AcquireRequest struct {
	Target    string
	RequestID string
	TTL       time.Duration
	// Queue, when set, makes the request wait its turn: requests are served
	// in ascending Queue.Seq (stream sequence = arrival order).
	Queue *QueueTicket
}

// QueueTicket is a queued request's place in its target's queue.
type QueueTicket struct {
	Seq      uint64
	Deadline time.Time // after it the ticket is dropped by anyone who sees it
	// Settle makes a new ticket only take its place (ErrNotYourTurn), so that
	// requests delivered in the same batch, racing each other, all hold
	// their places before the earliest is served.
	Settle bool
}

// Errors of the store. LockHeldError carries the holder's request id.
var (
	ErrRunNotFound = errors.New("run not found")
	ErrLockLost    = errors.New("lock lost: another driver holds the run")
	// ErrLockVanished says the lease's lock is gone without anyone having
	// taken it over (it expired under a paused driver, or Redis lost its
	// data: a restart without persistence, a flush), or that another request
	// holds it while the run's record is gone (Redis lost its data and the
	// free lock was taken). The driver may take it again (LockRecovery.Reacquire).
	ErrLockVanished = errors.New("lock vanished: the lock or the run record is gone from the store")
	ErrNotYourTurn  = errors.New("an earlier queued request goes first")
)

// LockHeldError says the target's lock is held by another request.
type LockHeldError struct{ RequestID string }

func (e *LockHeldError) Error() string {
	return fmt.Sprintf("target locked by request %q", e.RequestID)
}

// BeginRequest asks for a target's lock together with what a run starts
// from, read under the new lease in the same store round trip (reads after
// the grant see exactly what fenced writers left).
type BeginRequest struct {
	AcquireRequest
	// WatermarkKey, when set, names the watermark to read (Begun.Watermark).
	WatermarkKey string
	// UndeletedJobs is how many jobs marked undeleted (Jobs.UndeletedJobs)
	// to read, oldest first; 0 reads none.
	UndeletedJobs int
	// NewRun, when set, is the record of the request's new run: written
	// under the new lease (Token set from it) when the request has none
	// (Begun.Created). A since "auto" (Request.Since) is resolved against
	// the watermark of WatermarkKey read in the same step: NewRun's
	// Params.Since is set to it when one is stored, and every read of the
	// record sees it so.
	NewRun *Run
}

// Begun is a granted BeginRequest.
type Begun struct {
	Lease Lease
	// Run is the request's record, nil when it has none: a new run.
	Run *Run
	// Watermark is the stored watermark of BeginRequest.WatermarkKey;
	// HasWatermark is false when none is stored (or no key was asked for).
	Watermark    time.Time
	HasWatermark bool
	// Undeleted are the jobs marked undeleted, oldest first.
	Undeleted []string
	// Created says BeginRequest.NewRun was written (Run is then nil).
	Created bool
}

// RunFinishedError says the request's run is terminal already: Begin took
// nothing, and the recorded outcome (Run.Outcome) is what goes out again.
type RunFinishedError struct{ Run *Run }

func (e *RunFinishedError) Error() string {
	return fmt.Sprintf("run of request %q is finished (%s)", e.Run.RequestID, e.Run.State)
}

// Locker serialises runs per target with fenced leases.
type Locker interface {
	// Acquire takes the target's lock for req.RequestID with a new fencing
	// token. If the lock is held by the same request (a redelivery), it is
	// taken over with a new token. Errors: *LockHeldError, ErrNotYourTurn.
	Acquire(ctx context.Context, req AcquireRequest) (Lease, error)
	// Begin is Acquire for a delivery: unless the request's run is finished
	// (*RunFinishedError, nothing taken), it takes the lock as Acquire does
	// and reads the request's record, the watermark and the undeleted jobs
	// the run starts from, in one round trip. Errors as Acquire's.
	Begin(ctx context.Context, req BeginRequest) (Begun, error)
	// Renew extends the lease by ttl. ErrLockLost when another token holds
	// it, ErrLockVanished when it is gone.
	Renew(ctx context.Context, l Lease, ttl time.Duration) error
	// Release frees the lock if the lease still holds it (else nil) and
	// drops the request's queue ticket.
	Release(ctx context.Context, l Lease) error
}

// LockRecovery repairs a lock the normal path left wrong: one that vanished
// under a live driver, one a finished run's driver never released.
type LockRecovery interface {
	// Reacquire takes the lock again, with a new token, for a lease that met
	// ErrLockVanished, unless the run was driven by someone else meanwhile.
	// Errors: *LockHeldError (another request holds the target now),
	// ErrLockLost (another driver of the request holds the lock or wrote
	// the run record).
	Reacquire(ctx context.Context, l Lease, ttl time.Duration) (Lease, error)
	// ReleaseFinished frees the lock if it is held by requestID, whose run is
	// terminal (a driver died between recording the outcome and releasing),
	// and drops its queue ticket.
	ReleaseFinished(ctx context.Context, target, requestID string) error
}

// Runs stores run records. Fenced writes are compare-and-set on the lease's
// fencing token and fail with ErrLockLost when the lease is stale,
// ErrLockVanished when its lock (or, under another holder, the run's record)
// is gone.
type Runs interface {
	// LoadRun returns the record or ErrRunNotFound.
	LoadRun(ctx context.Context, target, requestID string) (*Run, error)
	// SaveRun writes the record (Token set from the lease), fenced. Terminal
	// records get the retention TTL.
	SaveRun(ctx context.Context, l Lease, r *Run) error
	// RecordOutcome writes the terminal record of a request that never ran
	// (conflict, queue timeout) unless it has a record; reports whether it
	// wrote. A redelivery then re-publishes that outcome instead of running.
	// Not fenced: the request never held the lock.
	RecordOutcome(ctx context.Context, r *Run) (bool, error)
	// Finish writes a run's end in two calls. The first (Finish.Run set),
	// fenced, records the run's job if asked (unfenced, like Jobs), commits
	// the watermark decision (never backwards), writes the terminal record
	// holding the outcome (Token set from the lease) and adds the duration
	// sample; errors as SaveRun's, *WatermarkMovedError or *EarlierJobError
	// (nothing written but the job's record). The second (Finish.Release),
	// once the run's job is DELETEd, drops that job from the registry,
	// releases the lock if the lease holds it, drops the request's queue
	// ticket and tells the replicas waiting for the target that it is free.
	Finish(ctx context.Context, l Lease, f *Finish) error
}

// Finish is one of the two writes of a run's end (Runs.Finish): Run set,
// or Release.
type Finish struct {
	// Run is the terminal record, holding its outcome.
	Run *Run
	// RecordJob asks to record Run's job (Run.StatusURL, kicked off at
	// Run.FirstKickOff) as Jobs.RecordKickOff would: the run has not yet.
	RecordJob bool
	// Watermark, when set, is the run's watermark decision.
	Watermark *WatermarkUpdate
	// Duration, when set, is added to the history of (target, Shape).
	Duration *DurationSample

	// Release lets the target go (Run unset).
	Release bool
	// ForgetJob, with Release, is the status URL of the job the run
	// DELETEd: dropped from the job registry.
	ForgetJob string
}

// EarlierJobError says the run's job was kicked off before the run's first
// kick-off (KickedOffAt): Pathling handed back a job an earlier run started,
// whose kick-off is the run's watermark base. Runs.Finish wrote nothing but
// the job's record: decide again.
type EarlierJobError struct{ KickedOffAt time.Time }

func (e *EarlierJobError) Error() string {
	return fmt.Sprintf("the job was kicked off earlier, at %s", e.KickedOffAt.Format(time.RFC3339Nano))
}

// WatermarkUpdate is a finished run's watermark decision on Key: made on
// the stored value Stored (HasStored false: none), it commits Commit
// (never backwards), or nothing when Commit is zero.
type WatermarkUpdate struct {
	Key       string
	Stored    time.Time
	HasStored bool
	Commit    time.Time
}

// DurationSample is a finished job's duration, for the history of its
// (target, shape).
type DurationSample struct {
	Shape string
	D     time.Duration
}

// WatermarkMovedError says Runs.Finish found another stored watermark than
// the one its decision read (Stored, HasStored false: none): decide again.
type WatermarkMovedError struct {
	Stored    time.Time
	HasStored bool
}

func (e *WatermarkMovedError) Error() string {
	return fmt.Sprintf("stored watermark changed to %s (present %v) since it was read", e.Stored.Format(time.RFC3339Nano), e.HasStored)
}

// Watermarks reads the watermarks of since "auto" (see WatermarkKey); runs
// commit them in Runs.Finish.
type Watermarks interface {
	// Watermark returns the stored watermark for key, ok=false when none.
	Watermark(ctx context.Context, target, key string) (t time.Time, ok bool, err error)
}

// Jobs is a per-target registry of the Pathling jobs kick-offs returned.
// Pathling hands an identical kick-off the job it already has (running,
// finished or failed), so a run can end up with a job an earlier run started:
// its data come from that earlier export. The registry tells such a job by its
// status URL, and keeps the jobs whose DELETE failed so that a later run can
// delete them before its own kick-off.
//
// Writes are not fenced by a lease: each records a fact about Pathling that
// stays true whoever writes it (a stale driver's kick-off did return that job;
// its DELETE did fail), and a refused write would lose the only trace of a
// job left behind.
type Jobs interface {
	// RecordKickOff notes that r's kick-off (at r.FirstKickOff) returned
	// r.StatusURL and returns the earliest kick-off time recorded for that
	// job (the earliest writer wins; r.FirstKickOff for a new job). Unless
	// that time is before r.FirstKickOff (Pathling handed back an earlier
	// job), it also saves r under l as Runs.SaveRun does, in the same
	// step, with SaveRun's errors (the job is recorded either way).
	RecordKickOff(ctx context.Context, l Lease, r *Run) (time.Time, error)
	// MarkUndeleted notes that the job's DELETE failed: it may still exist.
	MarkUndeleted(ctx context.Context, target, statusURL string) error
	// UndeletedJobs returns up to n jobs marked undeleted, oldest first.
	UndeletedJobs(ctx context.Context, target string, n int) ([]string, error)
	// ForgetJob drops a job Pathling no longer has (DELETE answered 2xx or 404).
	ForgetJob(ctx context.Context, target, statusURL string) error
}

// Event is an outgoing CloudEvent: subject, envelope (headers) and JSON body.
type Event struct {
	Subject  string            `json:"subject"`
	Envelope messages.Envelope `json:"envelope"`
	Body     json.RawMessage   `json:"body"`
}

// Publisher publishes an event and returns once the stream acknowledged it.
// Publishing the same event id twice is harmless (deduplicated by id).
type Publisher interface {
	Publish(ctx context.Context, e Event) error
}

// Ports are the outside world a Syncer talks to, apart from each target's
// Pathling. clients/redisstore.Store implements the store ports (Locker,
// LockRecovery, Runs, Watermarks, Jobs), clients/natsbus the Publisher.
type Ports struct {
	Locker     Locker
	Recovery   LockRecovery
	Runs       Runs
	Watermarks Watermarks
	// Jobs, when set, is the registry of Pathling jobs that keeps runs from
	// taking an earlier run's export for their own and deletes jobs left
	// behind (see Jobs). cmd always sets it; without it neither happens.
	Jobs      Jobs
	Publisher Publisher
	// Releases, when set, announces lock releases: a queued request whose
	// target is busy waits in this process for the release instead of
	// being redelivered after QueueRetry (wake.go). Optional.
	Releases Releases
	// Precedence, when set, lets a queued request that has no earlier
	// request for its target on its way ask for the lock at once, without
	// the settle delay (wake.go). Optional.
	Precedence Precedence
}

// Delivery is one SyncRequested message as the consumer received it.
type Delivery struct {
	Subject      string
	Header       map[string][]string // NATS headers, case-sensitive keys
	Data         []byte
	Stream       string
	StreamSeq    uint64
	NumDelivered uint64
	Published    time.Time
	// Settle, when the adapter sets it, lets the handler return Parked and
	// settle the delivery later, exactly once, from any goroutine: the
	// adapter keeps the message alive (and its worker slot taken) until
	// then. A run waiting between polls then holds no goroutine and no
	// stack, only its state and a timer. Without it, the handler returns
	// only when the delivery is done.
	Settle func(Disposition)
}

// Action is what the consumer adapter does with a delivery once handled.
type Action int

const (
	Ack    Action = iota // outcome published (or nothing left to do)
	Term                 // bad input: never redeliver
	Nak                  // redeliver after Disposition.Delay (0 when shutting down: another replica adopts at once)
	Leave                // do nothing: the lock was lost; the run's new driver (a redelivery) settles the message
	Parked               // the handler settles the delivery later through Delivery.Settle
)

func (a Action) String() string {
	switch a {
	case Ack:
		return "ack"
	case Term:
		return "term"
	case Nak:
		return "nak"
	case Leave:
		return "leave"
	case Parked:
		return "parked"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Disposition is the handler's verdict on a delivery.
type Disposition struct {
	Action Action
	Delay  time.Duration // for Nak
}

// HandlerFunc handles one delivery. It runs as long as the sync does (hours),
// or returns Parked and settles through Delivery.Settle when the sync ends;
// the adapter keeps the message alive meanwhile.
type HandlerFunc func(ctx context.Context, d Delivery) Disposition
