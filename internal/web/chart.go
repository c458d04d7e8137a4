package web

import (
	"fmt"
	"math"
	"slices"

	"github.com/and3rn3t/hookd/internal/deploy"
)

// The target page's chart: one bar per deploy for how long it ran, and a
// dot for its lead time (from hookd learning of the image to the new
// version passing its gate), oldest left. Drawn on the server as inline
// SVG: no script, no library, a few hundred bytes.

// chartDeploys is how many of the newest deploys the chart shows.
const chartDeploys = 30

// Geometry of the chart's viewBox; it scales to the page's width (at most
// 40rem), so its text stays readable on a phone.
const (
	chartW     = 400.0
	chartH     = 150.0
	chartLeft  = 38.0 // room for the axis labels
	chartRight = 6.0
	chartTop   = 10.0
	chartBase  = 138.0 // y of the zero line
	// chartMinSlots keeps a few deploys from becoming very wide bars.
	chartMinSlots = 12
)

type chartBar struct {
	X, Y, W, H float64
	Class      string // "ok", "bad", "warn"
	Title      string
	JobID      string
}

type chartDot struct {
	CX, CY float64
	Title  string
}

type chartTick struct {
	Y     float64
	Label string
}

// chartView is what the template draws; Bars empty means no chart.
type chartView struct {
	W, H, Left, Right, Base float64
	Bars                    []chartBar
	Dots                    []chartDot
	Ticks                   []chartTick
	// Summary says the chart in words, for screen readers and as caption.
	Summary string
}

// newChart draws the newest chartDeploys finished deploys of jobs (newest
// first) that ran, i.e. have a start and an end.
func newChart(jobs []deploy.Job) chartView {
	var ran []deploy.Job
	for _, j := range jobs {
		if j.Status.Final() && duration(j) > 0 {
			ran = append(ran, j)
			if len(ran) == chartDeploys {
				break
			}
		}
	}
	v := chartView{W: chartW, H: chartH, Left: chartLeft, Right: chartW - chartRight, Base: chartBase}
	if len(ran) == 0 {
		return v
	}
	slices.Reverse(ran) // oldest left
	top := 0.0
	var durs, leads []float64
	for _, j := range ran {
		d, l := duration(j), leadTime(j)
		durs = append(durs, d)
		if l > 0 {
			leads = append(leads, l)
		}
		top = math.Max(top, math.Max(d, l))
	}
	top = niceCeil(top)
	scale := (chartBase - chartTop) / top
	slots := max(len(ran), chartMinSlots)
	slot := (chartW - chartLeft - chartRight) / float64(slots)
	barW := math.Max(slot*0.6, 2)
	// The newest deploy sits at the right edge, whatever their number.
	first := slots - len(ran)
	for i, j := range ran {
		x := chartLeft + float64(first+i)*slot + (slot-barW)/2
		d := duration(j)
		h := math.Max(d*scale, 1)
		title := fmt.Sprintf("%s, %s: ran %s", stamp(j.FinishedAt), statusText(j.Status), seconds(d))
		if l := leadTime(j); l > 0 {
			title += ", live " + seconds(l) + " after hookd heard of it"
			v.Dots = append(v.Dots, chartDot{CX: round1(x + barW/2), CY: round1(chartBase - l*scale), Title: "lead time " + seconds(l)})
		}
		v.Bars = append(v.Bars, chartBar{
			X: round1(x), Y: round1(chartBase - h), W: round1(barW), H: round1(h),
			Class: statusClass(j.Status), Title: title, JobID: j.ID,
		})
	}
	for _, f := range []float64{0, 0.5, 1} {
		v.Ticks = append(v.Ticks, chartTick{Y: round1(chartBase - f*top*scale), Label: seconds(f * top)})
	}
	if len(ran) == 1 {
		v.Summary = "The last deploy ran for " + seconds(durs[0])
		if len(leads) > 0 {
			v.Summary += "; its version was live " + seconds(leads[0]) + " after hookd heard of it"
		}
	} else {
		v.Summary = fmt.Sprintf("The last %d deploys ran for %s at the median, %s at the longest",
			len(ran), seconds(median(durs)), seconds(slices.Max(durs)))
		if len(leads) > 0 {
			v.Summary += fmt.Sprintf("; a new version was live %s after hookd heard of it, at the median", seconds(median(leads)))
		}
	}
	v.Summary += "."
	return v
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }
