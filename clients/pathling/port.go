package pathling

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/pathling-sync/pathling-sync/handlers"
	"github.com/pathling-sync/pathling-sync/messages"
)

// Port adapts a Client to the sync handler's Pathling port: it maps the
// client's types to the handler's and each Kind to a SyncFailed reason.
type Port struct{ c *Client }

var _ handlers.Pathling = Port{}

// NewPort returns c as a handlers.Pathling.
func NewPort(c *Client) Port { return Port{c: c} }

// KickOff starts an import. Errors: *handlers.PathlingError, or ctx's error.
func (p Port) KickOff(ctx context.Context, ip handlers.ImportParams) (handlers.KickedOff, error) {
	a, err := p.c.Start(ctx, ImportRequest{
		ExportURL:             ip.ExportURL,
		SaveMode:              ip.SaveMode,
		Types:                 ip.Types,
		Elements:              ip.Elements,
		TypeFilters:           ip.TypeFilters,
		IncludeAssociatedData: ip.IncludeAssociatedData,
		Since:                 ip.Since,
		Until:                 ip.Until,
	})
	if err != nil {
		return handlers.KickedOff{}, portError(ctx, err)
	}
	return handlers.KickedOff{StatusURL: a.StatusURL, ServerDate: a.ServerDate}, nil
}

// Status polls a job. Errors: *handlers.PathlingError, or ctx's error.
func (p Port) Status(ctx context.Context, statusURL string) (handlers.JobStatus, error) {
	st, err := p.c.Status(ctx, statusURL)
	if err != nil {
		return handlers.JobStatus{}, portError(ctx, err)
	}
	out := handlers.JobStatus{Progress: st.Progress, RetryAfter: st.RetryAfter, ServerDate: st.ServerDate}
	switch st.State {
	case StateRunning:
		out.State = handlers.JobRunning
	case StateDone:
		out.State = handlers.JobDone
		if st.Result != nil {
			out.TransactionTime = st.Result.TransactionTimeRaw
			out.Outputs = len(st.Result.Outputs)
		}
	case StateLost:
		out.State = handlers.JobLost
	default:
		out.State = handlers.JobFailed
		if st.Failure != nil {
			out.Failure = toPathlingError(st.Failure)
		}
	}
	return out, nil
}

// Delete forgets a job (404 counts as done). Errors: *handlers.PathlingError.
func (p Port) Delete(ctx context.Context, statusURL string) error {
	if err := p.c.Delete(ctx, statusURL); err != nil {
		return portError(ctx, err)
	}
	return nil
}

// NormalizeExportURL returns a source URL (FHIR base or $export endpoint) as
// this Pathling expects it. Errors wrap ErrInvalidExportURL; they name no
// part of the URL.
func (p Port) NormalizeExportURL(raw string) (string, error) {
	return p.c.NormalizeExportURL(raw)
}

func portError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var pe *Error
	if errors.As(err, &pe) {
		return toPathlingError(pe)
	}
	return &handlers.PathlingError{Reason: messages.ReasonUnavailable, Retryable: true, Message: err.Error()}
}

// reasons maps the client's failure kinds to SyncFailed reasons.
var reasons = map[Kind]messages.Reason{
	KindRejected:     messages.ReasonRejected,
	KindImportFailed: messages.ReasonImportFailed,
	KindEmptyExport:  messages.ReasonImportFailed,
	KindUnauthorized: messages.ReasonUnauthorized,
	KindForbidden:    messages.ReasonUnauthorized,
	KindUnavailable:  messages.ReasonUnavailable,
	KindJobLost:      messages.ReasonJobLost,
	KindProtocol:     messages.ReasonUnavailable,
}

func toPathlingError(e *Error) *handlers.PathlingError {
	out := &handlers.PathlingError{
		Reason:     reasons[e.Kind],
		Empty:      e.Kind == KindEmptyExport,
		Retryable:  e.Retryable,
		HTTPStatus: e.HTTPStatus,
		Message:    e.Message,
		RetryAfter: e.RetryAfter,
	}
	if out.Reason == "" {
		out.Reason = messages.ReasonImportFailed
	}
	if out.Message == "" {
		out.Message = e.Error()
	}
	if e.Outcome != nil {
		if b, err := json.Marshal(e.Outcome); err == nil {
			out.OperationOutcome = b
		}
	}
	return out
}
