"""The explorer in a real browser: headless Chromium against a real server on a loopback port.
Open the zoo, filter to "resnet", open resnet50 and read its 4.09 GMACs, upload a PNG and see the
top-k and the Grad-CAM image appear beside the run's training curves."""
import pytest

from cnnzoo.explore import create_app, zoo
from tests.browser import browser_missing, headless_chromium, running_server
from tests.explore.test_explore import make_run, png_bytes, write_metrics

WAIT = 30  # seconds: generous for a loaded two-core machine; a passing run takes a few


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if why := browser_missing():
        pytest.skip(why)
    root = tmp_path_factory.mktemp("explore-browser")
    zoo.warm()  # the zoo's table is computed once per process; the test measures the pages, not that
    with running_server(create_app([write_metrics(make_run(root / "r18"))], [], warm=False)) as url:
        yield url, root


def test_zoo_model_page_and_prediction(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = site
    image = root / "upload.png"
    image.write_bytes(png_bytes((90, 60), "navy"))
    with headless_chromium() as driver:
        wait = WebDriverWait(driver, WAIT)
        driver.get(url + "/")
        rows = driver.find_elements(By.CSS_SELECTOR, "#zoo tbody tr")
        assert len(rows) > 50

        driver.find_element(By.ID, "filter").send_keys("resnet")
        shown = [r.get_attribute("data-name") for r in rows if r.is_displayed()]
        assert "resnet50" in shown and "seresnet18" in shown and "vgg16" not in shown
        for r in rows:  # a row shows exactly when its name or family holds the text
            text = (r.get_attribute("data-name") + " " + r.get_attribute("data-family")).lower()
            assert r.is_displayed() == ("resnet" in text)
        assert driver.find_element(By.ID, "count").text.startswith(f"{len(shown)} of")

        # Sorting by GMACs puts the heaviest ResNet last.
        driver.find_element(By.CSS_SELECTOR, '#zoo th[data-key="gmacs"]').click()
        visible = [r.get_attribute("data-name") for r in driver.find_elements(By.CSS_SELECTOR, "#zoo tbody tr")
                   if r.is_displayed()]
        assert visible[-1] in ("resnext101_32x8d", "seresnet152", "resnet152")

        driver.find_element(By.LINK_TEXT, "resnet50").click()
        gmacs = wait.until(EC.visibility_of_element_located((By.ID, "gmacs")))
        assert gmacs.text == "4.09"
        assert driver.find_element(By.ID, "diagram").find_elements(By.CSS_SELECTOR, ".part.stage")

        driver.find_element(By.ID, "nav-try").click()
        wait.until(EC.presence_of_element_located((By.ID, "image"))).send_keys(str(image))
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "ol.topk li")))
        top = driver.find_elements(By.CSS_SELECTOR, "ol.topk li .cls")
        assert len(top) == 5 and all(t.text for t in top)
        cam = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "img.map.cam")))
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", cam))
        assert cam.is_displayed() and cam.size["width"] >= 100

        # The run's curves from its metrics.csv: a Plotly chart of loss, top-1 and learning rate.
        plot = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '#curves [data-checkpoint="r18"] .js-plotly-plot')))
        names = driver.execute_script("return arguments[0].data.map(function (t) { return t.name; })", plot)
        assert names == ["train loss", "test loss", "train top1", "test top1", "lr"]
        assert len(plot.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace")) == 5
        assert plot.is_displayed() and plot.size["height"] > 400
        results = driver.find_element(By.ID, "results")
        assert plot.location["x"] > results.location["x"] + 300  # beside the predictions, not below them
