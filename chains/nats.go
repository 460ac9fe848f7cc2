package chains

import (
	"context"
	"fmt"
	"strconv"
	"time"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pathling-sync/pathling-sync/messages"
)

// Metadata keys the subscriber adds to every message (and so to the
// headers of a poisoned one).
const (
	// MetadataSubject is the NATS subject the message was published on.
	MetadataSubject = "_pathling_sync_subject"
	// MetadataStreamSeq is the message's stream sequence.
	MetadataStreamSeq = "_pathling_sync_stream_seq"
)

// unmarshaler turns a delivered NATS message into a Watermill message. It
// never fails, unlike watermill-nats' NATSMarshaler (which rejects a header
// with two values and then leaves the message unacked, to be redelivered
// forever): whatever arrives reaches the handler, and the poison queue if
// the handler cannot read it. The message UUID is the event id (ce-id, else
// Nats-Msg-Id, else "<stream>:<sequence>").
type unmarshaler struct{}

var _ wmnats.Unmarshaler = unmarshaler{}

func (unmarshaler) Unmarshal(m *nats.Msg) (*message.Message, error) {
	md := make(message.Metadata, len(m.Header)+2)
	for k, v := range m.Header {
		if len(v) > 0 && k != wmnats.WatermillUUIDHdr {
			md.Set(k, v[0])
		}
	}
	md.Set(MetadataSubject, m.Subject)
	stream, seq := "", uint64(0)
	if meta, err := m.Metadata(); err == nil {
		stream, seq = meta.Stream, meta.Sequence.Stream
		md.Set(MetadataStreamSeq, strconv.FormatUint(seq, 10))
	}
	msg := message.NewMessage(messages.RequestID(m.Header, stream, seq), m.Data)
	msg.Metadata = md
	return msg, nil
}

// poisonPublisher publishes poisoned messages (message.Publisher) to
// JetStream with their metadata as headers. Their Nats-Msg-Id is
// "<event id>/poison" (the original's id would be dropped as a duplicate of
// the original within the duplicate window).
type poisonPublisher struct {
	js      jetstream.JetStream
	timeout time.Duration
}

var _ message.Publisher = (*poisonPublisher)(nil)

// Publish publishes msgs on topic, each waiting for the stream's ack.
func (p *poisonPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, msg := range msgs {
		m := nats.NewMsg(topic)
		for k, v := range msg.Metadata {
			m.Header.Set(k, v)
		}
		id := msg.UUID + "/poison"
		m.Header.Set(messages.HeaderNatsMsgID, id)
		m.Data = msg.Payload
		ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
		_, err := p.js.PublishMsg(ctx, m, jetstream.WithMsgID(id))
		cancel()
		if err != nil {
			return fmt.Errorf("chains: publish poisoned %s: %w", msg.UUID, err)
		}
	}
	return nil
}

// Close does nothing: the connection is the caller's.
func (p *poisonPublisher) Close() error { return nil }

// sharedConnSubscriber keeps the Watermill router from closing the
// subscriber, whose Close would drain the service's shared NATS connection.
// The subscription ends with the context given to Subscribe.
type sharedConnSubscriber struct{ *wmnats.Subscriber }

func (sharedConnSubscriber) Close() error { return nil }
