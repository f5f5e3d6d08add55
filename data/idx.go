package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
)

// IDX magic numbers (big-endian) of the files MNIST-style datasets ship:
// two zero bytes, the element type 0x08 (unsigned byte) and the number of
// dimensions.
const (
	// IDXImagesMagic is the magic of an unsigned-byte, 3-dimensional IDX file
	// (images: count, rows, columns).
	IDXImagesMagic = 0x00000803
	// IDXLabelsMagic is the magic of an unsigned-byte, 1-dimensional IDX file
	// (labels: count).
	IDXLabelsMagic = 0x00000801
)

// openMaybeGzip opens path and, when it starts with the gzip magic bytes,
// returns a decompressing reader; otherwise the plain file contents. It
// also returns the file's size and whether it is gzipped. The close
// function closes everything opened.
func openMaybeGzip(path string) (io.Reader, func() error, int64, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, 0, false, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, 0, false, err
	}
	br := bufio.NewReaderSize(f, 1<<16)
	head, err := br.Peek(2)
	if err == nil && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, nil, 0, false, fmt.Errorf("%s: bad gzip header: %w", path, err)
		}
		return zr, func() error { zr.Close(); return f.Close() }, st.Size(), true, nil
	}
	return br, f.Close, st.Size(), false, nil
}

// readIDX reads an unsigned-byte IDX file (gzipped or not) whose magic must
// be want, returning its dimensions and data. It checks the magic, that no
// dimension after the first (the item count) is 0, that the data is as
// long as the dimensions declare and that nothing follows it.
// It allocates for the data the file holds, not for what the dimensions
// claim: a plain file's size is checked before reading, and a gzipped
// file's buffer grows with the data it decompresses to.
func readIDX(path string, want uint32, what string) ([]int, []byte, error) {
	r, closeFn, size, gzipped, err := openMaybeGzip(path)
	if err != nil {
		return nil, nil, err
	}
	defer closeFn()
	var magic uint32
	if err := binary.Read(r, binary.BigEndian, &magic); err != nil {
		return nil, nil, fmt.Errorf("%s: truncated: no 4-byte IDX magic number (%v)", path, err)
	}
	if magic != want {
		return nil, nil, fmt.Errorf("%s: bad magic number 0x%08x, want 0x%08x (IDX unsigned-byte %s file with %d dimension(s)); is this the right file?",
			path, magic, want, what, want&0xff)
	}
	nd := int(want & 0xff)
	dims := make([]int, nd)
	// total is the product of the dimensions unless it overflows 64 bits
	// (and no dimension is 0).
	total, overflow := uint64(1), false
	for i := range dims {
		var d uint32
		if err := binary.Read(r, binary.BigEndian, &d); err != nil {
			return nil, nil, fmt.Errorf("%s: truncated header: missing dimension %d of %d (%v)", path, i+1, nd, err)
		}
		dims[i] = int(d)
		hi, lo := bits.Mul64(total, uint64(d))
		total, overflow = lo, (overflow || hi != 0) && d != 0
	}
	for i, d := range dims[1:] {
		if d == 0 {
			return nil, nil, fmt.Errorf("%s: header declares dimensions %v: dimension %d of %d is 0, so every item is empty; is the file damaged?", path, dims, i+2, nd)
		}
	}
	const maxBytes = 1 << 34
	if overflow {
		return nil, nil, fmt.Errorf("%s: header declares dimensions %v (more than 2^64 bytes), which is implausibly large", path, dims)
	}
	if total > maxBytes {
		return nil, nil, fmt.Errorf("%s: header declares dimensions %v (%d bytes), which is implausibly large", path, dims, total)
	}
	grow := min(total, 1<<26)
	if gzipped {
		// Fashion-MNIST's files compress about 2:1: the buffer starts at
		// no more than 8 times the compressed size and grows as the data
		// arrives.
		grow = min(grow, 8*uint64(size))
	} else if data := uint64(max(size-4*int64(1+nd), 0)); total > data {
		return nil, nil, fmt.Errorf("%s: truncated: header declares dimensions %v (%d data bytes) but the file holds only %d", path, dims, total, data)
	}
	var buf bytes.Buffer
	buf.Grow(int(grow))
	n, err := buf.ReadFrom(io.LimitReader(r, int64(total)))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, fmt.Errorf("%s: truncated: header declares dimensions %v (%d data bytes) but the compressed stream ends after %d", path, dims, total, n)
		}
		return nil, nil, fmt.Errorf("%s: reading data: %w", path, err)
	}
	if uint64(n) != total {
		return nil, nil, fmt.Errorf("%s: truncated: header declares dimensions %v (%d data bytes) but the file holds only %d", path, dims, total, n)
	}
	var extra [1]byte
	if k, err := io.ReadFull(r, extra[:]); k > 0 {
		return nil, nil, fmt.Errorf("%s: unexpected data after the %d bytes its header %v declares", path, total, dims)
	} else if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%s: reading data: %w", path, err)
	}
	return dims, buf.Bytes(), nil
}

// ReadIDXImages reads an IDX image file (magic 0x00000803, gzipped or not)
// and returns the image count, rows, columns and the n*rows*cols pixel
// bytes. Errors name the file: bad magic, truncated header or data, or
// trailing bytes.
func ReadIDXImages(path string) (n, rows, cols int, pixels []byte, err error) {
	dims, b, err := readIDX(path, IDXImagesMagic, "images")
	if err != nil {
		return 0, 0, 0, nil, fmt.Errorf("data: %w", err)
	}
	return dims[0], dims[1], dims[2], b, nil
}

// ReadIDXLabels reads an IDX label file (magic 0x00000801, gzipped or not)
// and returns its labels. Errors name the file, as for ReadIDXImages.
func ReadIDXLabels(path string) ([]byte, error) {
	_, b, err := readIDX(path, IDXLabelsMagic, "labels")
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	return b, nil
}
