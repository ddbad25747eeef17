package repostore_test

import (
	"testing"

	"github.com/shoal-project/shoal/pkg/repostore"
	"github.com/shoal-project/shoal/pkg/repostore/storetest"
)

func TestLocal(t *testing.T) {
	storetest.Run(t, func(t *testing.T) repostore.Store {
		s, err := repostore.NewLocal(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
