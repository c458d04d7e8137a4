package deploy

import (
	"slices"
	"strings"
	"testing"
)

func TestSortByDependencies(t *testing.T) {
	tests := []struct {
		name string
		in   string // name:dep,dep name:…
		want string
	}{
		{"no dependencies: by name", "web worker api", "api web worker"},
		{"dependency first", "app:db db", "db app"},
		{"chain", "web:app app:db db", "db app web"},
		{"dependency outside the set ignored", "app:db web", "app web"},
		{"diamond", "web:api,auth api:db auth:db db", "db api auth web"},
		{"cycle keeps name order", "a:b b:a c", "c a b"},
		{"self dependency ignored", "a:a b", "a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ts []Target
			for f := range strings.FieldsSeq(tt.in) {
				name, deps, _ := strings.Cut(f, ":")
				tg := Target{Name: name}
				if deps != "" {
					tg.DependsOn = strings.Split(deps, ",")
				}
				ts = append(ts, tg)
			}
			SortByDependencies(ts)
			var got []string
			for _, tg := range ts {
				got = append(got, tg.Name)
			}
			if want := strings.Fields(tt.want); !slices.Equal(got, want) {
				t.Errorf("SortByDependencies(%s) = %v, want %v", tt.in, got, want)
			}
		})
	}
}
