package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
// returns a decompressing reader; otherwise the plain file contents.
// The close function closes everything opened.
func openMaybeGzip(path string) (io.Reader, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(f, 1<<16)
	head, err := br.Peek(2)
	if err == nil && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: bad gzip header: %w", path, err)
		}
		return zr, func() error { zr.Close(); return f.Close() }, nil
	}
	return br, f.Close, nil
}

// readIDX reads an unsigned-byte IDX file (gzipped or not) whose magic must
// be want, returning its dimensions and data. It checks the magic, that the
// data is as long as the dimensions declare and that nothing follows it.
func readIDX(path string, want uint32, what string) ([]int, []byte, error) {
	r, closeFn, err := openMaybeGzip(path)
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
	total := uint64(1)
	for i := range dims {
		var d uint32
		if err := binary.Read(r, binary.BigEndian, &d); err != nil {
			return nil, nil, fmt.Errorf("%s: truncated header: missing dimension %d of %d (%v)", path, i+1, nd, err)
		}
		dims[i] = int(d)
		total *= uint64(d)
	}
	const maxBytes = 1 << 34
	if total > maxBytes {
		return nil, nil, fmt.Errorf("%s: header declares dimensions %v (%d bytes), which is implausibly large", path, dims, total)
	}
	var buf bytes.Buffer
	buf.Grow(int(min(total, 1<<26)))
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
