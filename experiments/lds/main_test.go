package lds_test

import (
	"testing"

	"github.com/explaind/explaind/internal/testrun"
)

func TestMain(m *testing.M) { testrun.Main(m) }
