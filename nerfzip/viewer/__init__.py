"""Looking at a radiance field: ``export`` writes a static web page that renders a baked octree
with WebGL2 (``nerfzip export-web``; the page itself is in ``web/``), ``live`` serves any .nrz
file in an interactive viewer (``nerfzip view``), ``camera`` holds the camera convention and URL
form both share, ``browser`` the headless Chromium the tests and the benchmark drive."""
