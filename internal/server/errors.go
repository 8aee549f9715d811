package server

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startgate/startgate/internal/admission"
	"github.com/startgate/startgate/internal/prefetch"
)

// toStatus maps an error to a gRPC status. Handlers return admission and
// context errors as they are; this is the one place they become codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var code codes.Code
	switch {
	case errors.Is(err, admission.ErrQueueFull):
		code = codes.ResourceExhausted
	case errors.Is(err, admission.ErrDeadlineTooNear):
		code = codes.DeadlineExceeded
	case errors.Is(err, admission.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, admission.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, admission.ErrUnknownLease):
		code = codes.NotFound
	case errors.Is(err, prefetch.ErrNotTag):
		code = codes.InvalidArgument
	case errors.Is(err, prefetch.ErrRegistryNotAllowed):
		code = codes.PermissionDenied
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		code = codes.Internal
	}
	return status.Error(code, err.Error())
}

func invalid(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "server: invalid "+field+": "+format, args...)
}
