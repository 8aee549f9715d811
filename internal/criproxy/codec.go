package criproxy

import (
	"fmt"

	"google.golang.org/protobuf/proto"
)

// frame is a gRPC message kept as its wire bytes, so that calls are
// forwarded without being decoded: fields this build does not know (a
// newer kubelet or containerd) pass through unchanged.
type frame struct{ b []byte }

// rawCodec moves frames, and protobuf messages as the proto codec would
// (the proxy's own typed calls to containerd share the connection). It
// calls itself "proto" so the content type on the wire stays
// application/grpc+proto, exactly what both ends expect.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *frame:
		return m.b, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("criproxy: cannot marshal %T", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *frame:
		// gRPC may reuse data's buffer after Unmarshal returns.
		m.b = append(m.b[:0], data...)
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("criproxy: cannot unmarshal into %T", v)
}

func (rawCodec) Name() string { return "proto" }
