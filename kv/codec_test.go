package kv

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// fillAll sets every field reachable from v to a non-zero value.
func fillAll(t *testing.T, v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Unix(1_700_000_000+int64(*n), int64(*n)*1000)))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			fillAll(t, v.Field(i), n)
		}
	case reflect.String:
		v.SetString("值" + string(rune('a'+*n%26)))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillAll(t, v.Elem(), n)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			fillAll(t, s.Index(i), n)
		}
		v.Set(s)
	default:
		t.Fatalf("fillAll: unhandled kind %s: teach the codec and this test about it", v.Kind())
	}
}

func TestJobCodecCoversEveryField(t *testing.T) {
	var j Job
	n := 0
	fillAll(t, reflect.ValueOf(&j).Elem(), &n)
	var got Job
	if err := decodeJob(encodeJob(&j), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normJob(j), normJob(got)) {
		t.Fatalf("round trip lost a field:\n in  %+v\n out %+v", j, got)
	}
	// A job written by the previous release (JSON) still reads.
	old, _ := json.Marshal(&j)
	var fromJSON Job
	if err := decodeJob(old, &fromJSON); err != nil || !reflect.DeepEqual(normJob(j), normJob(fromJSON)) {
		t.Fatalf("JSON job: %+v, %v", fromJSON, err)
	}
	for i := 1; i < len(encodeJob(&j)); i++ { // truncated records are errors, not panics
		if err := decodeJob(encodeJob(&j)[:i], &got); err == nil {
			t.Fatalf("truncated at %d decoded", i)
		}
	}
}

func TestEntryCodecCoversEveryField(t *testing.T) {
	var e Entry
	n := 0
	fillAll(t, reflect.ValueOf(&e).Elem(), &n)
	e.Status = StatusDone
	var got Entry
	if err := decodeEntry(encodeEntry(&e), &got); err != nil {
		t.Fatal(err)
	}
	if !e.Created.Equal(got.Created) || !e.Updated.Equal(got.Updated) {
		t.Fatal("times differ")
	}
	got.Created, got.Updated = e.Created, e.Updated
	if !reflect.DeepEqual(e, got) {
		t.Fatalf("round trip lost a field:\n in  %+v\n out %+v", e, got)
	}
	for i := 1; i < len(encodeEntry(&e)); i++ {
		if err := decodeEntry(encodeEntry(&e)[:i], &got); err == nil {
			t.Fatalf("truncated at %d decoded", i)
		}
	}
}

// normJob makes times comparable with DeepEqual (the codec keeps the
// instant, not the location).
func normJob(j Job) Job {
	j.Received = j.Received.UTC()
	j.MsgTime = j.MsgTime.UTC()
	return j
}

func FuzzDecodeRecords(f *testing.F) {
	j := Job{ID: 1, Question: Question{App: "a", User: "u", Text: "x"}, Segment: &Segment{Pieces: []string{"p"}}}
	f.Add(encodeJob(&j))
	f.Add(encodeEntry(&Entry{ID: 1, User: "u"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var j Job
		var e Entry
		_ = decodeJob(b, &j)
		_ = decodeEntry(b, &e)
		_ = entryUser(b)
	})
}
