// A web worker building regl-scatterplot's spatial index (a k-d tree over the points, for hover and
// zoom) from the points' coordinates, transferred in and out. regl-scatterplot's own worker receives
// the points as a million small arrays, and cloning them for postMessage alone held the main thread
// ~0.7 s at 1,000,000 points; here only two Float32Arrays and the index's ArrayBuffer move, by transfer.

// regl-scatterplot's modules read `window` as they load (pub-sub-es opens a BroadcastChannel on it):
// the worker's own global stands in, set before the import (a static import would run first).
self.window = self;
const library = import('regl-scatterplot');

self.onmessage = async (event) => {
  const { id, x, y } = event.data;
  try {
    const { createSpatialIndex } = await library;
    const index = await createSpatialIndex({ x, y }, false);
    self.postMessage({ id, index }, [index]);
  } catch (err) {
    self.postMessage({ id, error: String(err && err.message ? err.message : err) });
  }
};
