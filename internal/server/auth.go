package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// PeerCred is the AuthInfo of a unix socket peer: the credentials the
// kernel recorded when the peer connected (SO_PEERCRED).
type PeerCred struct {
	credentials.CommonAuthInfo
	PID int32
	UID uint32
	GID uint32
}

// AuthType implements credentials.AuthInfo.
func (PeerCred) AuthType() string { return "peercred" }

// peerCredentials reads SO_PEERCRED on every accepted unix connection. It
// does no handshake on the wire: the kernel vouches for the peer, so a
// plain insecure client talks to it.
type peerCredentials struct {
	// peers counts each uid's connections; nil counts nothing.
	peers *peers
}

var _ credentials.TransportCredentials = peerCredentials{}

func (peerCredentials) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, PeerCred{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

// ServerHandshake reads the peer's credentials and counts the connection
// against its uid's cap; over the cap the connection is closed (the
// client sees it fail to connect; the daemon's log names the cap).
func (p peerCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("server: peer credentials need a unix socket, got %T", c)
	}
	cred, err := readPeerCred(uc)
	if err != nil {
		return nil, nil, err
	}
	if p.peers == nil {
		return c, cred, nil
	}
	release, err := p.peers.conn(cred.UID)
	if err != nil {
		return nil, nil, err
	}
	return &countedConn{Conn: c, release: release}, cred, nil
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (p peerCredentials) Clone() credentials.TransportCredentials { return p }

func (peerCredentials) OverrideServerName(string) error { return nil }

func readPeerCred(uc *net.UnixConn) (PeerCred, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return PeerCred{}, fmt.Errorf("server: peer credentials: %w", err)
	}
	var (
		ucred   *unix.Ucred
		credErr error
	)
	err = raw.Control(func(fd uintptr) {
		ucred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return PeerCred{}, fmt.Errorf("server: read SO_PEERCRED: %w", err)
	}
	return PeerCred{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		PID:            ucred.Pid,
		UID:            ucred.Uid,
		GID:            ucred.Gid,
	}, nil
}

// readOnly lists the methods any peer that can connect may call; every
// other method, including ones added later, needs an admin.
var readOnly = map[string]bool{
	"/startgate.v1.Startgate/Status":       true,
	"/startgate.v1.Startgate/ListQueue":    true,
	"/startgate.v1.Startgate/ListLeases":   true,
	"/startgate.v1.Startgate/Watch":        true,
	"/startgate.v1.Startgate/PrefetchList": true,
	"/startgate.v1.Startgate/Version":      true,
}

func isReadOnly(method string) bool {
	if readOnly[method] {
		return true
	}
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") ||
		strings.HasPrefix(method, "/grpc.reflection.")
}

// groupsFunc returns the supplementary groups of a process.
type groupsFunc func(pid int32) ([]uint32, error)

// authorize decides whether a peer may call method. Mutating calls need
// uid 0 or membership of adminGID (primary group from SO_PEERCRED, or a
// supplementary group of the process); adminGID < 0 means root only.
func authorize(method string, cred PeerCred, adminGID int, groups groupsFunc) error {
	if isReadOnly(method) || cred.UID == 0 {
		return nil
	}
	if adminGID >= 0 {
		if cred.GID == uint32(adminGID) {
			return nil
		}
		// SO_PEERCRED carries no supplementary groups. They are read from
		// /proc at call time; the connection keeps the peer's pid alive in
		// practice (a recycled pid would need the socket handed over).
		gs, err := groups(cred.PID)
		if err == nil {
			for _, g := range gs {
				if g == uint32(adminGID) {
					return nil
				}
			}
		}
	}
	name := method[strings.LastIndex(method, "/")+1:]
	if adminGID < 0 {
		return status.Errorf(codes.PermissionDenied, "server: %s needs root, peer uid %d is not", name, cred.UID)
	}
	return status.Errorf(codes.PermissionDenied, "server: %s needs root or group %d, peer uid %d (gid %d) is in neither", name, adminGID, cred.UID, cred.GID)
}

// procGroups reads the "Groups:" line of /proc/PID/status. procfs reads
// that file (Proc.NewStatus) but keeps only the real, effective, saved
// and filesystem IDs, not the supplementary groups, up to v0.23.0 (the
// newest); so this one line is parsed here.
func procGroups(pid int32) ([]uint32, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseGroups(f)
}

func parseGroups(f io.Reader) ([]uint32, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var out []uint32
		for _, s := range strings.Fields(rest) {
			g, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("server: bad group %q in /proc status: %w", s, err)
			}
			out = append(out, uint32(g))
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("server: no Groups line in /proc status")
}

// peerCredFrom returns the caller's credentials, false when the
// connection did not come through peerCredentials.
func peerCredFrom(ctx context.Context) (PeerCred, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return PeerCred{}, false
	}
	c, ok := p.AuthInfo.(PeerCred)
	return c, ok
}
