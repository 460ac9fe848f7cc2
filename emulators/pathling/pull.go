package pathling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sourceFile is one downloaded manifest output.
type sourceFile struct {
	resourceType string
	url          string
	data         []byte
}

// manifest is the part of a bulk export manifest Pathling reads: only "output" (never
// "deleted", and "error" is ignored).
type manifest struct {
	Output []struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	} `json:"output"`
}

// resourceTypePattern is the base-name pattern Pathling's ImportPnpExecutor uses to find the
// resource type of a staged file ("Patient.0000" → "Patient"); other files are skipped.
var resourceTypePattern = regexp.MustCompile(`^[A-Za-z]+$`)

// runPull runs one pull-mode job to its end.
func (e *Emulator) runPull(j *job) {
	defer j.cancel()
	log := e.cfg.Logger.With("job", j.id)
	outputs, err := e.pullAndImport(j)
	if j.ctx.Err() != nil {
		// Restarted or closed: the job is forgotten, as a Pathling restart would lose it.
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if j.deleted {
		log.Info("pathling emulator: job deleted before import, skipped")
		return
	}
	j.finished = e.cfg.Clock()
	if err != nil {
		j.state, j.cause = JobFailed, err.Error()
		log.Info("pathling emulator: job failed", "cause", j.cause)
		return
	}
	j.state, j.outputs = JobDone, outputs
	log.Info("pathling emulator: job done", "outputs", len(outputs))
}

// errCancelled stops a job that was deleted before its import phase.
var errCancelled = errors.New("job deleted")

func (e *Emulator) pullAndImport(j *job) ([]string, error) {
	ctx := j.ctx
	if j.req.ExportType == "static" {
		return nil, failure("Static export type is not currently supported. Please use dynamic mode.")
	}
	files, err := e.exportFromSource(ctx, j)
	if err != nil {
		return nil, err
	}

	// Organise the downloaded files by resource type, as Pathling does with its staged copies.
	byType := map[string][]sourceFile{}
	for _, f := range files {
		if !resourceTypePattern.MatchString(f.resourceType) {
			e.cfg.Logger.Warn("pathling emulator: could not extract resource type from file", "type", f.resourceType)
			continue
		}
		byType[f.resourceType] = append(byType[f.resourceType], f)
	}
	if len(byType) == 0 {
		return nil, failure("No files with extension ." + j.req.extension() + " were downloaded")
	}
	types := sortedKeys(byType)

	e.mu.Lock()
	deleted := j.deleted
	e.mu.Unlock()
	if deleted {
		return nil, errCancelled
	}

	// The table-write phase is serialised across jobs, like Pathling's import lock.
	e.importMu.Lock()
	defer e.importMu.Unlock()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if e.cfg.Auth != nil {
		if msg := writeAuthorityFailure(j.caller, types); msg != "" {
			return nil, failure(msg)
		}
	}
	e.mu.Lock()
	j.phase = PhaseImport
	e.showProgress(j, 0)
	e.mu.Unlock()
	if e.cfg.ImportHook != nil {
		if err := e.cfg.ImportHook(ctx, j.id); err != nil {
			return nil, failure(err.Error())
		}
	}
	if j.req.InputFormat == formatParquet {
		return nil, failure("Parquet import is not supported by the emulator")
	}

	// Parse everything first, so that a malformed file fails the job before any write.
	rowsByType := make(map[string][]row, len(types))
	for _, t := range types {
		for _, f := range byType[t] {
			rows, err := parseNDJSON(f.data)
			if err != nil {
				return nil, failure(err.Error())
			}
			rowsByType[t] = append(rowsByType[t], rows...)
		}
	}
	var outputs []string
	for i, t := range types {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Writes are not atomic across types: an error leaves earlier types written.
		if _, err := e.store.apply(j.req.SaveMode, t, rowsByType[t], e.cfg.Clock()); err != nil {
			return nil, failure(err.Error())
		}
		e.mu.Lock()
		e.showProgress(j, (i+1)*100/len(types))
		e.mu.Unlock()
		for k := range byType[t] {
			outputs = append(outputs, stagedFileURL(j.id, t, k, j.req.extension()))
		}
	}
	return outputs, nil
}

// exportFromSource kicks off the export, polls it, downloads the output files and finally
// deletes the export at the source, the way fhir-bulk-java does for Pathling.
func (e *Emulator) exportFromSource(ctx context.Context, j *job) ([]sourceFile, error) {
	kickOffURL := j.req.ExportURL + "/$export?" + exportQuery(j.req)
	tok, err := e.sourceToken(j.req.ExportURL)
	if err != nil {
		return nil, tokenFailure(err)
	}
	resp, err := e.sourceRequest(ctx, tok, http.MethodGet, kickOffURL, map[string]string{
		"Accept": "application/fhir+json",
		"Prefer": "respond-async",
	}, sourceRequestTimeout)
	if err != nil {
		return nil, requestFailure(err)
	}
	if resp.StatusCode != http.StatusAccepted {
		if resp.StatusCode == http.StatusOK {
			resp.drain()
			return nil, failure("KickOff: Unexpected response: " + resp.Proto + " " + resp.Status)
		}
		return nil, resp.httpError("Async Http resonse error")
	}
	loc := resp.Header.Get("Content-Location")
	resp.drain()
	if loc == "" {
		return nil, failure("KickOff: Missing content-location")
	}
	statusURL := resolveReference(kickOffURL, loc)
	// The export is deleted at the source whatever happens next.
	defer e.deleteAtSource(ctx, tok, statusURL)

	m, err := e.pollSource(ctx, tok, statusURL)
	if err != nil {
		return nil, err
	}
	origin, err := originOf(j.req.ExportURL)
	if err != nil {
		return nil, err
	}
	for _, o := range m.Output {
		o2, err := originOf(o.URL)
		if err != nil {
			return nil, err
		}
		if !strings.EqualFold(o2, origin) {
			return nil, failure(fmt.Sprintf("Manifest download URL origin does not match export URL origin: %s (expected origin: %s)", o.URL, origin))
		}
	}
	return e.download(ctx, tok, m)
}

// exportQuery builds the kick-off parameters: lists comma-joined, instants in
// yyyy-MM-ddTHH:mm:ss.SSSZ.
func exportQuery(r importRequest) string {
	var q []string
	add := func(k, v string) { q = append(q, url.QueryEscape(k)+"="+url.QueryEscape(v)) }
	format := r.InputFormat
	add("_outputFormat", format)
	if len(r.Types) > 0 {
		add("_type", strings.Join(r.Types, ","))
	}
	if r.Since != nil {
		add("_since", formatExportInstant(*r.Since))
	}
	if r.Until != nil {
		add("_until", formatExportInstant(*r.Until))
	}
	if len(r.Elements) > 0 {
		add("_elements", strings.Join(r.Elements, ","))
	}
	if len(r.TypeFilters) > 0 {
		add("_typeFilter", strings.Join(r.TypeFilters, ","))
	}
	if len(r.IncludeAssociatedData) > 0 {
		add("includeAssociatedData", strings.Join(r.IncludeAssociatedData, ","))
	}
	return strings.Join(q, "&")
}

func formatExportInstant(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// pollSource polls the status URL until the manifest arrives. Delays: Retry-After if sent,
// else PollInterval; after a 429, Retry-After or 10× PollInterval (retried forever); after a
// transient error (an OperationOutcome whose issues are all "transient"), Retry-After or
// 2× PollInterval, at most 3 times in a row. Every delay is clamped to [PollInterval, 60 s].
// There is no overall timeout.
func (e *Emulator) pollSource(ctx context.Context, tok tokenFunc, statusURL string) (manifest, error) {
	delay := e.cfg.PollInterval
	transient := 0
	for {
		if err := sleep(ctx, delay); err != nil {
			return manifest{}, err
		}
		resp, err := e.sourceRequest(ctx, tok, http.MethodGet, statusURL, map[string]string{"Accept": "application/json"}, sourceRequestTimeout)
		if err != nil {
			return manifest{}, requestFailure(err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			var m manifest
			body, rerr := resp.readAll()
			if rerr != nil || json.Unmarshal(body, &m) != nil {
				return manifest{}, failure("Invalid successful response: " + resp.Proto + " " + resp.Status)
			}
			return m, nil
		case http.StatusAccepted:
			resp.drain()
			transient = 0
			delay = e.clampDelay(resp.retryAfter(), e.cfg.PollInterval)
		default:
			herr := resp.httpError("Async Http resonse error")
			switch {
			case herr.transient:
				if transient >= maxTransientErrors {
					return manifest{}, herr
				}
				transient++
				delay = e.clampDelay(herr.retryAfter, 2*e.cfg.PollInterval)
			case resp.StatusCode == http.StatusTooManyRequests:
				delay = e.clampDelay(herr.retryAfter, 10*e.cfg.PollInterval)
			default:
				return manifest{}, herr
			}
		}
	}
}

func (e *Emulator) clampDelay(retryAfter *time.Duration, def time.Duration) time.Duration {
	d := def
	if retryAfter != nil {
		d = *retryAfter
	}
	if d > maxPollDelay {
		d = maxPollDelay
	}
	if d < e.cfg.PollInterval {
		d = e.cfg.PollInterval
	}
	return d
}

// download fetches the manifest's output files, up to 10 at a time. Any failure fails the
// whole download with "Download failed".
func (e *Emulator) download(ctx context.Context, tok tokenFunc, m manifest) ([]sourceFile, error) {
	files := make([]sourceFile, len(m.Output))
	errs := make([]error, len(m.Output))
	sem := make(chan struct{}, maxConcurrentFetches)
	var wg sync.WaitGroup
	for i, o := range m.Output {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			resp, err := e.sourceRequest(ctx, tok, http.MethodGet, o.URL, nil, sourceDownloadTimeout)
			if err != nil {
				errs[i] = err
				return
			}
			if resp.StatusCode != http.StatusOK {
				resp.drain()
				errs[i] = fmt.Errorf("download %s: status %d", o.URL, resp.StatusCode)
				return
			}
			data, err := resp.readAll()
			if err != nil {
				errs[i] = err
				return
			}
			files[i] = sourceFile{resourceType: o.Type, url: o.URL, data: data}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var te *sourceTokenError
			if errors.As(err, &te) {
				return nil, tokenFailure(te.err)
			}
			e.cfg.Logger.Info("pathling emulator: download failed", "err", err)
			return nil, failure("Download failed")
		}
	}
	return files, nil
}

// deleteAtSource sends DELETE to the status URL; its outcome is only logged, as in
// fhir-bulk-java.
func (e *Emulator) deleteAtSource(ctx context.Context, tok tokenFunc, statusURL string) {
	if ctx.Err() != nil {
		return
	}
	resp, err := e.sourceRequest(ctx, tok, http.MethodDelete, statusURL, map[string]string{"Accept": "application/json"}, sourceRequestTimeout)
	if err != nil {
		e.cfg.Logger.Warn("pathling emulator: failed to delete export at source", "err", err)
		return
	}
	resp.drain()
	if resp.StatusCode != http.StatusAccepted {
		e.cfg.Logger.Warn("pathling emulator: failed to delete export at source", "status", resp.StatusCode)
	}
}

// sourceResponse is a response from the source, with its body still to be read and a cancel
// for its request deadline.
type sourceResponse struct {
	*http.Response
	cancel context.CancelFunc
}

func (r *sourceResponse) readAll() ([]byte, error) {
	defer r.cancel()
	defer r.Body.Close()
	return io.ReadAll(r.Body)
}

func (r *sourceResponse) drain() {
	defer r.cancel()
	defer r.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
}

func (r *sourceResponse) retryAfter() *time.Duration {
	return parseRetryAfter(r.Header.Get("Retry-After"), time.Now())
}

// sourceToken returns the token function for an export from exportURL: Config.SourceToken,
// or the pathling.import.pnp.* client (Config.SourceAuth); nil for an open source.
func (e *Emulator) sourceToken(exportURL string) (tokenFunc, error) {
	switch {
	case e.cfg.SourceToken != nil:
		return e.cfg.SourceToken, nil
	case e.sourceTokens != nil:
		return e.sourceTokens.forExport(exportURL)
	}
	return nil, nil
}

// requestFailure words a failed request to the source as the job's failure cause.
func requestFailure(err error) error {
	var te *sourceTokenError
	if errors.As(err, &te) {
		return tokenFailure(te.err)
	}
	return systemError(err)
}

// sourceRequest sends one request to the source with a deadline and, when tok is set, the
// source bearer token.
func (e *Emulator) sourceRequest(ctx context.Context, tok tokenFunc, method, target string, headers map[string]string, timeout time.Duration) (*sourceResponse, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	req, err := http.NewRequestWithContext(rctx, method, target, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if tok != nil {
		bearer, err := tok(rctx)
		if err != nil {
			cancel()
			return nil, &sourceTokenError{err: err}
		}
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := e.cfg.HTTPClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	return &sourceResponse{Response: resp, cancel: cancel}, nil
}

// httpError is fhir-bulk-java's BulkExportException.HttpError.
type httpError struct {
	msg        string
	transient  bool
	retryAfter *time.Duration
}

func (e *httpError) Error() string { return e.msg }

// httpError reads an error response: "<prefix>: [statusCode: N, operationOutcome: ...,
// retryAfter: ...]", the OperationOutcome only when the body is JSON and is one.
func (r *sourceResponse) httpError(prefix string) *httpError {
	body, _ := r.readAll()
	herr := &httpError{retryAfter: r.retryAfter()}
	details := []string{"statusCode: " + strconv.Itoa(r.StatusCode)}
	if strings.Contains(r.Header.Get("Content-Type"), "json") {
		if oo, ok := parseSourceOutcome(body); ok {
			details = append(details, "operationOutcome: "+oo.String())
			herr.transient = oo.transient()
		}
	}
	if ra := r.Header.Get("Retry-After"); ra != "" && herr.retryAfter != nil {
		details = append(details, "retryAfter: RetryValue("+ra+")")
	}
	herr.msg = fmt.Sprintf("%s: [%s]", prefix, strings.Join(details, ", "))
	return herr
}

// sourceOutcome is fhir-bulk-java's OperationOutcome value class.
type sourceOutcome struct {
	ResourceType string `json:"resourceType"`
	Issue        []struct {
		Severity    *string `json:"severity"`
		Code        *string `json:"code"`
		Diagnostics *string `json:"diagnostics"`
	} `json:"issue"`
}

func parseSourceOutcome(body []byte) (sourceOutcome, bool) {
	var oo sourceOutcome
	if err := json.Unmarshal(body, &oo); err != nil || oo.ResourceType != "OperationOutcome" {
		return sourceOutcome{}, false
	}
	return oo, true
}

// transient is OperationOutcome.isTransient: every issue (vacuously, none) has code transient.
func (oo sourceOutcome) transient() bool {
	for _, is := range oo.Issue {
		if is.Code == nil || *is.Code != "transient" {
			return false
		}
	}
	return true
}

// String is Lombok's toString of the value class.
func (oo sourceOutcome) String() string {
	str := func(p *string) string {
		if p == nil {
			return "null"
		}
		return *p
	}
	issues := make([]string, 0, len(oo.Issue))
	for _, is := range oo.Issue {
		issues = append(issues, fmt.Sprintf("OperationOutcome.Issue(severity=%s, code=%s, diagnostics=%s)",
			str(is.Severity), str(is.Code), str(is.Diagnostics)))
	}
	return fmt.Sprintf("OperationOutcome(resourceType=%s, issue=[%s])", oo.ResourceType, strings.Join(issues, ", "))
}

// parseRetryAfter reads delta-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) *time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		d := time.Duration(n) * time.Second
		return &d
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		return &d
	}
	return nil
}

// systemError is what fhir-bulk-java reports for an I/O failure talking to the source.
func systemError(err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	return failure("System error in bulk export")
}

// originOf is ImportPnpExecutor.originOf: scheme://host[:port], default ports omitted, lower
// case.
func originOf(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Hostname() == "" {
		return "", failure("Invalid URL: " + raw)
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	port := u.Port()
	if port == "" || (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		return scheme + "://" + host, nil
	}
	return scheme + "://" + host + ":" + port, nil
}

// resolveReference resolves a possibly relative Content-Location against the kick-off URL.
func resolveReference(base, ref string) string {
	b, err := url.Parse(base)
	if err != nil {
		return ref
	}
	r, err := url.Parse(ref)
	if err != nil {
		return ref
	}
	return b.ResolveReference(r).String()
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
