// Package mongotest starts a MongoDB-protocol server for tests: the real
// MongoDB named by WEFT_TEST_MONGO_URI when set, else FerretDB v1 on its
// SQLite backend, in-process. FerretDB v1 scans whole collections and has no
// transactions, so it suits small test data only.
package mongotest

import (
	"context"
	"log/slog"
	"os"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// Start returns the URI of a server and a func that stops it (and waits
// for its goroutines) when the server was started here.
func Start() (uri string, stop func(), err error) {
	if uri := os.Getenv("WEFT_TEST_MONGO_URI"); uri != "" {
		return uri, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "weft-ferretdb-")
	if err != nil {
		return "", nil, err
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		// FerretDB logs every connection at info level; tests want quiet.
		Logger:    slog.New(slog.DiscardHandler),
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Run(ctx)
	}()
	// MongoDBURI waits for Run to have opened the listener.
	uri = f.MongoDBURI()
	return uri, func() {
		cancel()
		<-done
		_ = os.RemoveAll(dir)
	}, nil
}
