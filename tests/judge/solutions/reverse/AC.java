import java.io.*;
import java.util.*;
public class Main {
    public static void main(String[] args) throws IOException {
        BufferedReader r = new BufferedReader(new InputStreamReader(System.in));
        List<String> t = new ArrayList<>(Arrays.asList(r.readLine().trim().split("\\s+")));
        Collections.reverse(t);
        System.out.println(String.join(" ", t));
    }
}
