// chaos-go: the chaos suite's workload client on the real go-dqlite driver (Debian's
// golang-github-canonical-go-dqlite-dev, GOPATH mode, no cgo). It runs the four workloads (set,
// register, bank, list) with a few goroutines each until SIGTERM or --duration, and prints one
// JSON line per completed operation on stdout, in the shape test/chaos/history.ts reads.
//
// Connections are the driver's own (Connector.Connect) used directly, not through
// database/sql: database/sql silently retries a statement the driver answered with ErrBadConn,
// and go-dqlite answers ErrBadConn also when leadership was lost after the write was proposed,
// so a retry could apply a write twice and hide the first outcome. Here every outcome is
// recorded as it happened: "ok", "fail" (certainly not applied) or "info" (unknown).
package main

import (
	"bufio"
	"context"
	sqldriver "database/sql/driver"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/canonical/go-dqlite/client"
	"github.com/canonical/go-dqlite/driver"
)

// op is one recorded operation (see test/chaos/history.ts, ChaosOp).
type op struct {
	Workload    string      `json:"workload"`
	Client      string      `json:"client"`
	F           string      `json:"f"`
	Value       interface{} `json:"value"`
	InvokedAt   float64     `json:"invokedAt"`
	CompletedAt *float64    `json:"completedAt"`
	Type        string      `json:"type"`
	Result      interface{} `json:"result,omitempty"`
	Error       string      `json:"error,omitempty"`
}

func nowMs() float64 { return float64(time.Now().UnixNano()) / 1e6 }

type out struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (o *out) emit(r op) {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	o.mu.Lock()
	o.w.Write(b)
	o.w.WriteByte('\n')
	o.mu.Unlock()
}

func (o *out) flush() {
	o.mu.Lock()
	o.w.Flush()
	o.mu.Unlock()
}

// worker owns one driver connection at a time, and the reason the driver logged last: the
// driver turns "not leader" (certainly not applied) and "leadership lost" (unknown) alike into
// ErrBadConn, and says which only in a debug log line from the calling goroutine.
type worker struct {
	name       string
	workload   string
	rnd        *rand.Rand
	connector  sqldriver.Connector
	conn       sqldriver.Conn
	lastReason string
	seq        int
	lastSeen   map[int64]string // per register key: the value this worker saw or wrote last
	opTimeout  time.Duration
	out        *out
	cfg        *config
}

var codeInLog = regexp.MustCompile(`\((\d+) - `)

func (w *worker) logFunc(l client.LogLevel, format string, a ...interface{}) {
	msg := fmt.Sprintf(format, a...)
	if strings.HasPrefix(msg, "leadership lost") || strings.HasPrefix(msg, "network connection lost") ||
		strings.HasPrefix(msg, "not found") || strings.HasPrefix(msg, "unexpected error code") {
		w.lastReason = msg
	}
}

type outcome int

const (
	ok outcome = iota
	fail
	unknown
)

func (o outcome) String() string { return [...]string{"ok", "fail", "info"}[o] }

// classify says whether a failed request certainly did nothing. Only a refusal before the
// statement ran is certain: "not leader" (SQLITE_IOERR_NOT_LEADER), or an SQLite error
// other than an I/O error; everything else (lost connection, timeout, leadership lost) is
// unknown.
func (w *worker) classify(err error) outcome {
	var derr driver.Error
	if errors.As(err, &derr) {
		if derr.Code&0xff == 10 {
			return unknown
		}
		return fail
	}
	if errors.Is(err, sqldriver.ErrBadConn) {
		if m := codeInLog.FindStringSubmatch(w.lastReason); m != nil && strings.HasPrefix(w.lastReason, "leadership lost") {
			if code, _ := strconv.Atoi(m[1]); code == 10|40<<8 || code == 10|32<<8 {
				return fail
			}
		}
		return unknown
	}
	return unknown
}

func (w *worker) connect(ctx context.Context) error {
	if w.conn != nil {
		return nil
	}
	c, err := w.connector.Connect(ctx)
	if err != nil {
		return err
	}
	w.conn = c
	return nil
}

func (w *worker) drop() {
	if w.conn != nil {
		w.conn.Close()
		w.conn = nil
	}
}

func named(args ...interface{}) []sqldriver.NamedValue {
	nv := make([]sqldriver.NamedValue, len(args))
	for i, a := range args {
		// The raw driver takes only driver.Value types (database/sql would convert).
		if n, isInt := a.(int); isInt {
			a = int64(n)
		}
		nv[i] = sqldriver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return nv
}

func (w *worker) exec(ctx context.Context, query string, args ...interface{}) (int64, error) {
	res, err := w.conn.(sqldriver.ExecerContext).ExecContext(ctx, query, named(args...))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (w *worker) query(ctx context.Context, query string, args ...interface{}) ([][]sqldriver.Value, error) {
	rows, err := w.conn.(sqldriver.QueryerContext).QueryContext(ctx, query, named(args...))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var all [][]sqldriver.Value
	for {
		dest := make([]sqldriver.Value, len(rows.Columns()))
		if err := rows.Next(dest); err != nil {
			if err == io.EOF {
				return all, nil
			}
			return nil, err
		}
		all = append(all, dest)
	}
}

// run performs one operation: `body` runs on a connected worker and returns the result and
// the outcome of an error. A failure to connect means nothing was sent.
func (w *worker) run(f string, value interface{}, body func(ctx context.Context) (interface{}, outcome, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), w.opTimeout)
	defer cancel()
	w.lastReason = ""
	r := op{Workload: w.workload, Client: w.name, F: f, Value: value, InvokedAt: nowMs()}
	var result interface{}
	var kind outcome
	var err error
	if err = w.connect(ctx); err != nil {
		kind = fail
	} else {
		result, kind, err = body(ctx)
	}
	if kind == ok {
		t := nowMs()
		r.CompletedAt = &t
		r.Result = result
	} else {
		r.Error = err.Error()
		if kind == fail {
			t := nowMs()
			r.CompletedAt = &t
		}
		w.drop()
	}
	r.Type = kind.String()
	w.out.emit(r)
}

func (w *worker) value() string {
	w.seq++
	return fmt.Sprintf("%s-%d", w.name, w.seq)
}

// epoch: registers and lists use fresh keys every epoch, so each key's history stays short.
func (w *worker) epoch() int64 {
	return (time.Now().UnixMilli() - w.cfg.epochStartMs) / w.cfg.epochMs
}

func (w *worker) stepSet() {
	v := w.value()
	w.run("add", v, func(ctx context.Context) (interface{}, outcome, error) {
		if _, err := w.exec(ctx, "INSERT INTO set_items(v) VALUES (?)", v); err != nil {
			return nil, w.classify(err), err
		}
		return nil, ok, nil
	})
}

func (w *worker) stepRegister() {
	key := w.epoch()*int64(w.cfg.registerKeys) + int64(w.rnd.Intn(w.cfg.registerKeys))
	switch w.rnd.Intn(3) {
	case 0:
		w.run("read", map[string]interface{}{"key": key}, func(ctx context.Context) (interface{}, outcome, error) {
			rows, err := w.query(ctx, "SELECT v FROM registers WHERE k = ?", key)
			if err != nil {
				return nil, fail, err // a read changes nothing: its failure is certain
			}
			if len(rows) == 0 {
				delete(w.lastSeen, key)
				return map[string]interface{}{"value": nil}, ok, nil
			}
			w.lastSeen[key] = asString(rows[0][0])
			return map[string]interface{}{"value": w.lastSeen[key]}, ok, nil
		})
	case 1:
		v := w.value()
		w.run("write", map[string]interface{}{"key": key, "value": v}, func(ctx context.Context) (interface{}, outcome, error) {
			if _, err := w.exec(ctx, "INSERT INTO registers(k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", key, v); err != nil {
				return nil, w.classify(err), err
			}
			w.lastSeen[key] = v
			return nil, ok, nil
		})
	default:
		// Expect a value seen recently or null: a cas with a random expectation fails always.
		var expected interface{}
		if seen, has := w.lastSeen[key]; has {
			expected = seen
		}
		v := w.value()
		w.run("cas", map[string]interface{}{"key": key, "expected": expected, "value": v}, func(ctx context.Context) (interface{}, outcome, error) {
			var n int64
			var err error
			if expected == nil {
				n, err = w.exec(ctx, "INSERT INTO registers(k, v) VALUES (?, ?) ON CONFLICT(k) DO NOTHING", key, v)
			} else {
				n, err = w.exec(ctx, "UPDATE registers SET v = ? WHERE k = ? AND v = ?", v, key, expected)
			}
			if err != nil {
				return nil, w.classify(err), err
			}
			if n == 1 {
				w.lastSeen[key] = v
			}
			return map[string]interface{}{"applied": n == 1}, ok, nil
		})
	}
}

func (w *worker) stepBank() {
	if w.rnd.Intn(2) == 0 {
		w.run("read", nil, func(ctx context.Context) (interface{}, outcome, error) {
			rows, err := w.query(ctx, "SELECT id, balance FROM accounts ORDER BY id")
			if err != nil {
				return nil, fail, err
			}
			balances := map[string]int64{}
			for _, row := range rows {
				balances[fmt.Sprint(row[0])] = row[1].(int64)
			}
			return map[string]interface{}{"balances": balances}, ok, nil
		})
		return
	}
	from := w.rnd.Intn(w.cfg.accounts)
	to := (from + 1 + w.rnd.Intn(w.cfg.accounts-1)) % w.cfg.accounts
	amount := 1 + w.rnd.Intn(5)
	w.run("transfer", map[string]interface{}{"from": from, "to": to, "amount": amount}, func(ctx context.Context) (interface{}, outcome, error) {
		tx, err := w.conn.(sqldriver.ConnBeginTx).BeginTx(ctx, sqldriver.TxOptions{})
		if err != nil {
			return nil, w.classify(err), err
		}
		if _, err := w.exec(ctx, "UPDATE accounts SET balance = balance - ? WHERE id = ?", amount, from); err != nil {
			tx.Rollback()
			return nil, fail, err // not committed: the server rolls the transaction back
		}
		if _, err := w.exec(ctx, "UPDATE accounts SET balance = balance + ? WHERE id = ?", amount, to); err != nil {
			tx.Rollback()
			return nil, fail, err
		}
		if err := tx.Commit(); err != nil {
			return nil, w.classify(err), err
		}
		return nil, ok, nil
	})
}

func (w *worker) stepList() {
	key := w.epoch()*int64(w.cfg.listKeys) + int64(w.rnd.Intn(w.cfg.listKeys))
	if w.rnd.Intn(3) == 0 {
		w.run("read", map[string]interface{}{"key": key}, func(ctx context.Context) (interface{}, outcome, error) {
			rows, err := w.query(ctx, "SELECT v FROM list_items WHERE k = ? ORDER BY id", key)
			if err != nil {
				return nil, fail, err
			}
			values := []string{}
			for _, row := range rows {
				values = append(values, asString(row[0]))
			}
			return map[string]interface{}{"values": values}, ok, nil
		})
		return
	}
	v := w.value()
	w.run("append", map[string]interface{}{"key": key, "value": v}, func(ctx context.Context) (interface{}, outcome, error) {
		if _, err := w.exec(ctx, "INSERT INTO list_items(k, v) VALUES (?, ?)", key, v); err != nil {
			return nil, w.classify(err), err
		}
		return nil, ok, nil
	})
}

func asString(v sqldriver.Value) string {
	switch x := v.(type) {
	case []byte:
		return string(x)
	case string:
		return x
	}
	return fmt.Sprint(v)
}

type config struct {
	epochStartMs int64
	epochMs      int64
	registerKeys int
	listKeys     int
	accounts     int
}

func main() {
	servers := flag.String("servers", "", "comma-separated addresses")
	dbName := flag.String("db", "chaos", "database name")
	workloads := flag.String("workloads", "set,register,bank,list", "workloads to run")
	workers := flag.Int("workers", 1, "goroutines per workload")
	duration := flag.Duration("duration", time.Hour, "stop after this long (or at SIGTERM)")
	opTimeout := flag.Duration("op-timeout", 5*time.Second, "per-operation timeout")
	pauseMs := flag.Int("pause-ms", 20, "mean pause between a worker's operations")
	seed := flag.Int64("seed", 1, "random seed")
	cfg := &config{}
	flag.Int64Var(&cfg.epochStartMs, "epoch-start-ms", time.Now().UnixMilli(), "start of epoch 0 (ms since 1970)")
	flag.Int64Var(&cfg.epochMs, "epoch-ms", 20000, "length of a key epoch")
	flag.IntVar(&cfg.registerKeys, "register-keys", 3, "register keys per epoch")
	flag.IntVar(&cfg.listKeys, "list-keys", 3, "list keys per epoch")
	flag.IntVar(&cfg.accounts, "accounts", 5, "bank accounts")
	flag.Parse()
	if *servers == "" {
		fmt.Fprintln(os.Stderr, "chaos-go: --servers is required")
		os.Exit(2)
	}

	var nodes []client.NodeInfo
	for i, a := range strings.Split(*servers, ",") {
		nodes = append(nodes, client.NodeInfo{ID: uint64(i + 1), Address: strings.TrimSpace(a)})
	}
	o := &out{w: bufio.NewWriterSize(os.Stdout, 1<<16)}
	var stop int32
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; atomic.StoreInt32(&stop, 1) }()
	go func() {
		for atomic.LoadInt32(&stop) == 0 {
			time.Sleep(200 * time.Millisecond)
			o.flush()
		}
	}()
	deadline := time.Now().Add(*duration)

	var wg sync.WaitGroup
	id := 0
	for _, workload := range strings.Split(*workloads, ",") {
		for i := 0; i < *workers; i++ {
			id++
			store := client.NewInmemNodeStore()
			store.Set(context.Background(), nodes)
			w := &worker{name: fmt.Sprintf("g%d", id), workload: workload, rnd: rand.New(rand.NewSource(*seed*1000 + int64(id))),
				opTimeout: *opTimeout, out: o, cfg: cfg, lastSeen: map[int64]string{}}
			drv, err := driver.New(store, driver.WithLogFunc(w.logFunc), driver.WithConnectionTimeout(2*time.Second), driver.WithRetryLimit(2))
			if err != nil {
				fmt.Fprintln(os.Stderr, "chaos-go: driver:", err)
				os.Exit(2)
			}
			if w.connector, err = drv.OpenConnector(*dbName); err != nil {
				fmt.Fprintln(os.Stderr, "chaos-go: connector:", err)
				os.Exit(2)
			}
			wg.Add(1)
			go func(w *worker) {
				defer wg.Done()
				for atomic.LoadInt32(&stop) == 0 && time.Now().Before(deadline) {
					switch w.workload {
					case "set":
						w.stepSet()
					case "register":
						w.stepRegister()
					case "bank":
						w.stepBank()
					case "list":
						w.stepList()
					default:
						fmt.Fprintln(os.Stderr, "chaos-go: unknown workload", w.workload)
						os.Exit(2)
					}
					time.Sleep(time.Duration(w.rnd.Intn(2**pauseMs+1)) * time.Millisecond)
				}
				w.drop()
			}(w)
		}
	}
	wg.Wait()
	atomic.StoreInt32(&stop, 1)
	o.flush()
}
